#version 450
// SwiGLU in place: g[i] = silu(g[i]) * u[i], silu(v) = v / (1 + exp(-v)).
// Grid-stride over a bounded number of steps (the host sizes the grid).

layout(local_size_x_id = 0) in;

layout(set = 0, binding = 0) buffer Gate { float g[]; };
layout(set = 0, binding = 1) readonly buffer Up { float u[]; };

layout(push_constant) uniform Push {
    uint n; // elements
} pc;

const uint MAX_STEPS = 1024u;

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint i = gl_GlobalInvocationID.x;
    for (uint s = 0u; s < MAX_STEPS && i < pc.n; s++, i += stride) {
        float v = g[i];
        g[i] = v / (1.0 + exp(-v)) * u[i];
    }
}

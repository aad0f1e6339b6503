#version 450
// Activations to f16, once per batch step: h[i] = f16(x[i]) for the n
// quads (4 floats) of x, so that gemm reads f16 activations (AF16 = 1)
// instead of converting its f32 tiles in every workgroup. Values beyond
// f16's range become infinities, as the conversion inside gemm's tiles
// does. Grid-stride over a bounded number of steps (the host sizes the
// grid).

layout(local_size_x_id = 0) in;

layout(set = 0, binding = 0) readonly buffer X { vec4 x4[]; };
layout(set = 0, binding = 1) writeonly buffer H { uvec2 h4[]; };

layout(push_constant) uniform Push {
    uint n; // quads
} pc;

const uint MAX_STEPS = 1024u;   // kernels.GridStrideSteps

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint i = gl_GlobalInvocationID.x;
    for (uint s = 0u; s < MAX_STEPS && i < pc.n; s++, i += stride) {
        vec4 v = x4[i];
        h4[i] = uvec2(packHalf2x16(v.xy), packHalf2x16(v.zw));
    }
}

#version 450
// Reads specialization and push constants: out[i] = in[i] * SCALE + BIAS + pc.offset + i * pc.step.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const float SCALE = 1.0;
layout(constant_id = 2) const int BIAS = 0;

layout(set = 0, binding = 0) readonly buffer In { float v[]; };
layout(set = 0, binding = 1) writeonly buffer Out { float o[]; };
layout(push_constant) uniform Push { uint n; float offset; float step; } pc;

void main() {
    uint i = gl_GlobalInvocationID.x;
    if (i < pc.n) {
        o[i] = v[i] * SCALE + float(BIAS) + pc.offset + float(i) * pc.step;
    }
}

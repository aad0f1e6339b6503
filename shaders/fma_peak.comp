#version 450
#extension GL_EXT_control_flow_attributes : require
// Arithmetic roofline: each invocation runs 16 independent fp32 FMA chains
// on registers (enough in flight to cover FMA latency), then writes their
// sum so the compiler keeps the work. 64 FMAs per iteration.
layout(local_size_x_id = 0) in;

layout(set = 0, binding = 0) writeonly buffer Out { vec4 o[]; };
layout(push_constant) uniform Push { uint iters; float a; float b; } pc;

void main() {
    vec4 x[4];
    [[unroll]] for (uint c = 0u; c < 4u; c++) {
        x[c] = vec4(float(gl_GlobalInvocationID.x % 1024u) * 1e-3 + float(c));
    }
    vec4 a = vec4(pc.a);
    vec4 b = vec4(pc.b);
    for (uint i = 0u; i < pc.iters; i++) {
        [[unroll]] for (uint u = 0u; u < 4u; u++) {
            [[unroll]] for (uint c = 0u; c < 4u; c++) {
                x[c] = fma(x[c], a, b);
            }
        }
    }
    o[gl_GlobalInvocationID.x] = x[0] + x[1] + x[2] + x[3];
}

#version 450
#extension GL_GOOGLE_include_directive : require
// out[i][:] = row tokens[i] of the token-embedding matrix, dequantized to
// float32 (any type of include/weights.glsl). The matrix may be split into
// parts of consecutive rows bound one at a time: a dispatch writes only the
// tokens in [rowBase, rowBase + rows). One invocation per output quad,
// grid-stride over a bounded number of steps (the host sizes the grid).

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint WTYPE = 0u;

layout(set = 0, binding = 0) readonly buffer Wbuf { uint w[]; };
layout(set = 0, binding = 1) readonly buffer Tokens { uint tokens[]; };
layout(set = 0, binding = 2) buffer Out { vec4 out4[]; };

layout(push_constant) uniform Push {
    uint n;        // tokens
    uint dim;      // elements per row, a multiple of 4 (of 32 for block types)
    uint rowBase;  // first matrix row of the bound part
    uint rows;     // rows of the bound part
    uint rowBytes; // bytes per row
} pc;

#include "include/weights.glsl"

const uint MAX_STEPS = 1024u;

void main() {
    uint dim4 = pc.dim / 4u;
    uint total = pc.n * dim4;
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint idx = gl_GlobalInvocationID.x;
    for (uint s = 0u; s < MAX_STEPS && idx < total; s++, idx += stride) {
        uint i = idx / dim4;
        uint q = idx - i * dim4;
        uint row = tokens[i] - pc.rowBase; // wraps below rowBase
        if (row < pc.rows) {
            out4[idx] = wQuad(row * pc.rowBytes, 4u * q);
        }
    }
}

#version 450
#extension GL_GOOGLE_include_directive : require
// Rotary position embedding, llama.cpp's "normal" mode (GGUF llama): in
// every head of Q and K the adjacent pairs (2i, 2i+1), i < ropeDims/2, are
// rotated by theta = pos * invFreq[i], where the host computes
// invFreq[i] = base^(-2i/ropeDims) / freqFactor[i] (rope_freqs, 1 when
// absent) in float64. Dims from ropeDims on are left alone. pos is the
// token's position in its sequence (its depth in the decoding tree), read
// from a buffer. theta is reduced to [-pi, pi] in two steps (Cody-Waite)
// before cos/sin, whose precision Vulkan only bounds on that range.
//
// One invocation per (token, head, pair) of Q and of K, grid-stride over a
// bounded number of steps (the host sizes the grid).

layout(local_size_x_id = 0) in;

layout(set = 0, binding = 0) buffer Q { vec2 q[]; };
layout(set = 0, binding = 1) buffer K { vec2 k[]; };
layout(set = 0, binding = 2) readonly buffer Pos { int pos[]; };
layout(set = 0, binding = 3) readonly buffer Freq { float invFreq[]; };

layout(push_constant) uniform Push {
    uint n;        // tokens
    uint qHeads;
    uint kvHeads;
    uint headDim;  // even
    uint ropeDims; // even, at most headDim
} pc;

const uint MAX_STEPS = 1024u;

#include "include/rope.glsl"

void main() {
    uint pairs = pc.ropeDims / 2u;
    uint halfDim = pc.headDim / 2u;
    uint heads = pc.qHeads + pc.kvHeads;
    uint total = pc.n * heads * pairs;
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint idx = gl_GlobalInvocationID.x;
    for (uint s = 0u; s < MAX_STEPS && idx < total; s++, idx += stride) {
        uint i = idx % pairs;
        uint th = idx / pairs;
        uint h = th % heads;
        uint t = th / heads;
        float theta = float(pos[t]) * invFreq[i];
        if (h < pc.qHeads) {
            uint j = (t * pc.qHeads + h) * halfDim + i;
            q[j] = rotate(q[j], theta);
        } else {
            uint j = (t * pc.kvHeads + (h - pc.qHeads)) * halfDim + i;
            k[j] = rotate(k[j], theta);
        }
    }
}

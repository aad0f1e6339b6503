#version 450
#extension GL_GOOGLE_include_directive : require
// RoPE fused with the K/V write of a decoding step: rotates Q in place as
// rope.comp does, and writes K (rotated) and V of each of the step's rows
// into its slot of one layer's KV pool, converted to fp16 when the pool is
// fp16 (as kv_scatter.comp's MODE 0; kvpool.Pool.WriteRoPE is the Go
// side). One dispatch instead of rope, a barrier and kv_scatter; the dense
// K buffer is only read. The same rotation code as rope.comp, so the
// results are bit-identical to rope + kv_scatter.
//
// One invocation per (token, head, pair) over the Q heads and then the KV
// heads, every pair of a head (pairs from ropeDims/2 on are not rotated
// but still written for K and V), grid-stride over at most MAX_STEPS steps
// (the host sizes the grid). The host checks that slots are distinct and
// inside the pool.

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint KV_F16 = 0u;

layout(set = 0, binding = 0) buffer Q { vec2 q[]; };                 // [n][qHeads][headDim] float32
layout(set = 0, binding = 1) readonly buffer K { vec2 k[]; };        // [n][kvHeads][headDim] float32
layout(set = 0, binding = 2) readonly buffer V { vec2 v[]; };
layout(set = 0, binding = 3) readonly buffer Pos { int pos[]; };
layout(set = 0, binding = 4) readonly buffer Freq { float invFreq[]; };
layout(set = 0, binding = 5) readonly buffer Slots { uint slots[]; };
// The pool as 32-bit words: [slot][kvHeads][headDim], fp16 two per word.
layout(set = 0, binding = 6) writeonly buffer PoolK { uint poolK[]; };
layout(set = 0, binding = 7) writeonly buffer PoolV { uint poolV[]; };

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
    uint total = pc.n * heads * halfDim;
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint idx = gl_GlobalInvocationID.x;
    for (uint s = 0u; s < MAX_STEPS && idx < total; s++, idx += stride) {
        uint i = idx % halfDim;
        uint th = idx / halfDim;
        uint h = th % heads;
        uint t = th / heads;
        if (h < pc.qHeads) {
            if (i < pairs) {
                uint j = (t * pc.qHeads + h) * halfDim + i;
                q[j] = rotate(q[j], float(pos[t]) * invFreq[i]);
            }
            continue;
        }
        uint kh = h - pc.qHeads;
        uint j = (t * pc.kvHeads + kh) * halfDim + i;
        vec2 kr = k[j];
        if (i < pairs) {
            kr = rotate(kr, float(pos[t]) * invFreq[i]);
        }
        vec2 vr = v[j];
        uint row = slots[t] * pc.kvHeads + kh;   // pool row of (slot, KV head)
        if (KV_F16 != 0u) {
            uint w = row * halfDim + i;
            poolK[w] = packHalf2x16(kr);
            poolV[w] = packHalf2x16(vr);
        } else {
            uint w = (row * halfDim + i) * 2u;
            poolK[w] = floatBitsToUint(kr.x);
            poolK[w + 1u] = floatBitsToUint(kr.y);
            poolV[w] = floatBitsToUint(vr.x);
            poolV[w + 1u] = floatBitsToUint(vr.y);
        }
    }
}

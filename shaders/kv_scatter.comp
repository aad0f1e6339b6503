#version 450
// Writes rows of one layer's K/V pool (kvpool), K and V together. The pool
// is bound as 32-bit words, [slot][kv_head][D] with ROW_WORDS words per slot:
// fp16 packs two halves per word (KV_F16 = 1), fp32 is one float per word
// (kernels.KVScatter is the Go side of this interface).
//
// MODE 0, scatter: row i of the dense float32 sources srcK/srcV
// ([n][kv_head][D]) is stored at slot slots[i], converted to fp16 when the
// pool is fp16. One invocation per (row, word), grid-stride; the host checks
// that slots are distinct and inside the pool.
//
// MODE 1, move: for j = 0..n-1 in this order, pool row pairs[2j] is copied to
// pool row pairs[2j+1] (pairs in push constants, at most 15 per dispatch).
// Each invocation owns word columns of the row and walks the pairs in order,
// so a pair may overwrite the source of an earlier pair, never one of a later
// pair (the host guarantees it): speculative decoding's Accept compacts the
// accepted path in place this way. srcK, srcV and slots are unused.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ROW_WORDS = 1u; // 32-bit words per pool row
layout(constant_id = 2) const uint KV_F16 = 0u;
layout(constant_id = 3) const uint MODE = 0u;

layout(set = 0, binding = 0) readonly buffer SrcK { uint srcK[]; };
layout(set = 0, binding = 1) readonly buffer SrcV { uint srcV[]; };
layout(set = 0, binding = 2) readonly buffer Slots { uint slots[]; };
layout(set = 0, binding = 3) buffer PoolK { uint poolK[]; };
layout(set = 0, binding = 4) buffer PoolV { uint poolV[]; };

layout(push_constant) uniform Push {
    uint n;         // rows (MODE 0) or pairs (MODE 1)
    uint pad;
    uint pairs[30]; // MODE 1: (from, to) slot pairs
} pc;

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (MODE == 0u) {
        uint total = pc.n * ROW_WORDS;
        for (uint idx = gl_GlobalInvocationID.x; idx < total; idx += stride) {
            uint i = idx / ROW_WORDS;
            uint w = idx - i * ROW_WORDS;
            uint dst = slots[i] * ROW_WORDS + w;
            if (KV_F16 != 0u) {
                uint s = 2u * idx; // element 2w of row i
                poolK[dst] = packHalf2x16(vec2(uintBitsToFloat(srcK[s]), uintBitsToFloat(srcK[s + 1u])));
                poolV[dst] = packHalf2x16(vec2(uintBitsToFloat(srcV[s]), uintBitsToFloat(srcV[s + 1u])));
            } else {
                poolK[dst] = srcK[idx];
                poolV[dst] = srcV[idx];
            }
        }
    } else {
        for (uint w = gl_GlobalInvocationID.x; w < ROW_WORDS; w += stride) {
            for (uint j = 0u; j < pc.n; j++) {
                uint from = pc.pairs[2u * j] * ROW_WORDS + w;
                uint to = pc.pairs[2u * j + 1u] * ROW_WORDS + w;
                poolK[to] = poolK[from];
                poolV[to] = poolV[from];
            }
        }
    }
}

// K/V pool access shared by the attention kernels. The pool is bound as
// 32-bit words so fp16 needs no 16-bit storage feature: KV_F16 = 1 packs two
// halves per word, KV_F16 = 0 stores one float per word. Layout:
// [slot][kv_head][D].

// kvPair returns elements j and j+1 (j even) of row (slot, head).
#define KV_PAIR(buf, slot, head, j, KVH, D, F16) \
    ((F16) != 0u \
        ? unpackHalf2x16(buf[(((slot) * (KVH) + (head)) * (D) + (j)) >> 1]) \
        : vec2(uintBitsToFloat(buf[((slot) * (KVH) + (head)) * (D) + (j)]), \
               uintBitsToFloat(buf[((slot) * (KVH) + (head)) * (D) + (j) + 1u])))

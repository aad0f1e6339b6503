// The fused reduction of partial_attn's variants (scalar and decode): the
// workgroup whose count completes a query merges that query's partials into
// the output, in the inverse index's list order (reduce_partials'
// arithmetic), so the result does not depend on which workgroup is last.
//
// The including kernel defines, before this file: MERGE_LIST, a shared
// uint array of at least 2 x B entries (the list of a query's partials);
// MERGE_FLAGS, a shared float array of at least WG entries; SCRATCH with
// scratch()/setScratch() over its floats; include/float_bits.glsl; the constants B, G, QH, D4, WG and KVH; the buffers meta, pl, po4,
// o4 and counter; and pc.offsetsOff, pc.listOff and pc.unit.

// Merges the partials of query for the G query heads of KV head head into
// the output (the whole workgroup takes part).
void mergeQuery(uint query, uint head) {
    uint tid = gl_LocalInvocationIndex;
    uint begin = meta[pc.offsetsOff + query];
    uint end = meta[pc.offsetsOff + query + 1u];
    bool over = end < begin || end - begin > 2u * B || end - begin > (SCRATCH - G) / G;
    uint n = over ? 0u : end - begin;
    // 1. The partial indices to MERGE_LIST, then every (head, partial)
    //    log-sum-exp to the scratch.
    for (uint i = tid; i < n; i += WG) {   // n may exceed WG (2B > WG)
        MERGE_LIST[i] = meta[pc.listOff + begin + i];
    }
    barrier();
    for (uint e = tid; e < G * n; e += WG) {
        uint g = e / n;
        setScratch(e, pl[MERGE_LIST[e - g * n] * QH + head * G + g]);
    }
    barrier();
    // 2. Per query head: maximum, weights (over the log-sum-exps) and
    //    their sum (at G*n + g; -1 marks a poisoned head), in list order.
    for (uint g = tid; g < G; g += WG) {
        float m = over ? POS_INF : NEG_INF;
        for (uint i = 0u; i < n; i++) {
            float lse = scratch(g * n + i);
            m = max(m, poisoned(lse) ? POS_INF : lse);
        }
        float den = 0.0;
        for (uint i = 0u; i < n; i++) {
            float lse = scratch(g * n + i);
            float w = lse == NEG_INF || m == POS_INF ? 0.0 : exp((lse - m) * pc.unit);
            setScratch(g * n + i, w);
            den += w;
        }
        setScratch(G * n + g, m == POS_INF ? -1.0 : den);
    }
    barrier();
    // 3. Weighted sums, one vec4 of one head's output per invocation; four
    //    partials' loads in flight at once, summed in list order.
    for (uint e = tid; e < G * D4; e += WG) {
        uint g = e / D4;
        uint col = e % D4;
        float den = scratch(G * n + g);
        vec4 num = vec4(0.0);
        for (uint i0 = 0u; i0 < n; i0 += 4u) {
            vec4 x[4];
            [[unroll]] for (uint u = 0u; u < 4u; u++) {
                uint i = min(i0 + u, n - 1u);
                x[u] = po4[(MERGE_LIST[i] * QH + head * G + g) * D4 + col];
            }
            [[unroll]] for (uint u = 0u; u < 4u; u++) {
                if (i0 + u < n) {
                    num += scratch(g * n + i0 + u) * x[u];
                }
            }
        }
        o4[(query * QH + head * G + g) * D4 + col] = den < 0.0 ? vec4(NAN) : (den > 0.0 ? num / den : vec4(0.0));
    }
    barrier();   // MERGE_LIST and the scratch are reused by the next query
}

// Counts this workgroup's partials of its nq queries (listed in meta from
// qStart) for KV head head and merges every query it completes. Release
// first: every invocation's partial writes reach the device before the
// workgroup counts them.
void fusedMerge(uint qStart, uint nq, uint head) {
    uint tid = gl_LocalInvocationIndex;
    memoryBarrierBuffer();
    barrier();
    for (uint q0 = 0u; q0 < nq; q0 += WG) {
        uint n = min(WG, nq - q0);
        bool last = false;
        if (tid < n) {
            uint query = meta[qStart + q0 + tid];
            uint need = meta[pc.offsetsOff + query + 1u] - meta[pc.offsetsOff + query];
            uint c = query * KVH + head;
            if (atomicAdd(counter[c], 1u) + 1u == need) {
                counter[c] = 0u;   // all of this dispatch's counts are in: ready for the next
                last = true;
            }
        }
        // Acquire: the other workgroups' partials of the queries this one
        // completed are read after their counts.
        memoryBarrierBuffer();
        MERGE_FLAGS[tid] = last ? 1.0 : 0.0;
        barrier();
        for (uint j = 0u; j < n; j++) {
            if (MERGE_FLAGS[j] != 0.0) {
                mergeQuery(meta[qStart + q0 + j], head);
            }
        }
        barrier();   // MERGE_FLAGS is rewritten by the next chunk of queries
    }
}

#version 450
#extension GL_EXT_control_flow_attributes : require
#extension GL_GOOGLE_include_directive : require
// Partial tree attention for one work item and one KV head.
//
// A work item is a run of KV tokens (slots listed in the metadata) and the
// queries that see at least one of them, with an optional bitmask saying
// which query sees which token. Every attention method (DeFT-Flatten blocks,
// DeFT-Node nodes, Flash-Decoding chunks, the dense mask) is a list of work
// items. Rows are (query, query head) pairs of the KV head's group, so K/V
// is read once for all query heads that share it; the planner cuts items so
// that their rows usually fit one row tile of R rows.
//
// Per tile of B tokens the workgroup runs a small GEMM pipeline in fp32:
//   1. K of the tile (converted from fp16), its mask words and the next
//      tile's slot list go to shared memory; the next tile's K, mask words
//      and the slots of the tile after it are fetched into registers;
//   2. scores S = Q K^T: each thread scores one token against RT rows that
//      all B threads of its token tile share (Q reads are broadcasts);
//   3. online softmax in the log2 domain (Q is pre-scaled by scale*log2 e),
//      WG/R threads per row, probabilities in a second buffer; V of the
//      tile goes to shared memory and the next tile's V is fetched;
//   4. O = diag(alpha) O + P V: each thread owns DV vec4 columns of RV rows
//      (P reads are broadcasts).
// Four barriers per tile; each row's normalised output and log-sum-exp are
// written once as a partial result for reduce_partials, or, with pc.fuse,
// merged by the workgroup that writes a query's last partial (an integer
// counter per query and KV head decides which; the merge runs in the
// inverse index's fixed order, so the result does not depend on which
// workgroup comes last), and reduce_partials does not run.
//
// Scores are in units of pc.unit (a power of two, 1 unless the host scaled
// them down to stay finite; the host passes scale / unit): probabilities
// are exp2((x - max) * unit) and log-sum-exps are divided by unit. A row
// whose visible scores are not finite (fp32 overflow, NaN inputs) is
// poisoned: its partial output and log-sum-exp are NaN, so the merged
// output is NaN instead of a plausible wrong number. An item of more than
// MAX_PASSES shared-memory passes (row tiles x token tiles; the planner
// never makes one) is not computed, so a bad plan cannot loop unboundedly:
// it poisons the partials of its first MAX_PASSES row tiles.
//
// Sizes are specialization constants chosen by the host from the device's
// limits (treeattn.ChooseTiles mirrors the derived constants below);
// nothing here assumes a subgroup size.

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128;   // head dim, a multiple of 4
layout(constant_id = 2) const uint B = 32;    // tokens per tile, power of two >= 4
layout(constant_id = 3) const uint R = 32;    // rows per row tile, power of two >= 4, divides WG
layout(constant_id = 4) const uint G = 4;     // query heads per KV head
layout(constant_id = 5) const uint KVH = 8;   // KV heads
layout(constant_id = 6) const uint KV_F16 = 1;

const uint WG = gl_WorkGroupSize.x;
const uint QH = G * KVH;
const uint D4 = D / 4u;
const uint KS = D4 + 1u;   // vec4 stride of Q, K, V rows: one vec4 of padding spreads rows over banks
const uint PS = R / 4u + 1u;   // vec4 stride of one token's scores (rows of the tile)

// Scores: one token per thread (threads along tokens) and RT rows that are
// the same for all B threads of a token tile, so Q reads are broadcasts and
// only K reads use shared-memory bandwidth: each K vec4 feeds 4*RT FMAs.
const uint RT = (R * B) / WG;
// Output: threads along the head dim (DV vec4 columns dg, dg+DG, ...) and
// RV rows shared by all threads of a row group, so P reads are broadcasts.
const uint DV = (D4 + WG - 1u) / WG;
const uint DG = (D4 + DV - 1u) / DV;
const uint RGV = WG / DG;
const uint RV = (R + RGV - 1u) / RGV;
const bool PV4 = (RV % 4u == 0u) && (RGV * RV == R);   // P rows as aligned vec4s
// Loops over the head dim and the tile's tokens are unrolled by UNROLL
// only: fully unrolled, the kernel took all 255 registers a thread can have
// on the H100 (the driver's statistics), and far fewer workgroups fit.
layout(constant_id = 7) const uint UNROLL = 4;   // power of two
layout(constant_id = 8) const uint MAX_PASSES = 48;   // treeattn.MaxTilePasses
// The coopmat variant's matrix shape (same contract): unused here.
layout(constant_id = 9) const uint CM_M = 16;
layout(constant_id = 10) const uint CM_N = 16;
layout(constant_id = 11) const uint CM_K = 16;
const uint JU = D4 % UNROLL == 0u ? UNROLL : 1u;
const uint TU = UNROLL < B ? UNROLL : B;
// Softmax: PARTS threads per row, TPP tokens each.
const uint PARTS = WG / R;
const uint TPP = B / PARTS;
// Staging: vec4s of a K or V tile per thread.
const uint NL = (B * D4 + WG - 1u) / WG;
// Mask words a row tile's queries can span, and per thread when staged.
const uint MW = (R - 1u) / 32u + 2u;
const uint MWL = (B * MW + WG - 1u) / WG;

layout(set = 0, binding = 0) readonly buffer Qbuf { vec4 q4[]; };     // [query][QH][D]
// K and V are read 4 elements at a time: fp16 as uvec2, fp32 as uvec4
// (aliased views of the same binding).
layout(set = 0, binding = 1) readonly buffer K16 { uvec2 k16[]; };
layout(set = 0, binding = 1) readonly buffer K32 { uvec4 k32[]; };
layout(set = 0, binding = 2) readonly buffer V16 { uvec2 v16[]; };
layout(set = 0, binding = 2) readonly buffer V32 { uvec4 v32[]; };
layout(set = 0, binding = 3) readonly buffer Meta { uint meta[]; };
// The item table at the start of the metadata (kernels.ItemRecord).
struct ItemRecord {
    uint slotsOff;     // metadata offset of the slot list
    uint numSlots;
    uint queriesOff;   // metadata offset of the query list
    uint numQueries;
    uint maskOff;      // metadata offset of [token][maskWords] visibility bits
    uint maskWords;    // 0: every query sees every token
    uint partialBase;  // first partial result of the item's queries
    uint reserved;
};
layout(set = 0, binding = 3) readonly buffer MetaItems { ItemRecord items[]; };
// Partials are coherent: with pc.fuse the last workgroup of a query reads
// the partials other workgroups wrote during this dispatch.
layout(set = 0, binding = 4) coherent buffer PartO { vec4 po4[]; };  // [partial][QH][D]
layout(set = 0, binding = 5) coherent buffer PartL { float pl[]; };  // [partial][QH]
layout(set = 0, binding = 6) writeonly buffer Out { vec4 o4[]; };    // [query][QH][D] (pc.fuse only)
// Partials of each (query, KV head) written so far in this dispatch; zero
// between dispatches (the merging workgroup resets its count).
layout(set = 0, binding = 7) coherent buffer Counters { uint counter[]; };   // [query][KVH]

layout(push_constant) uniform Push {
    uint nItems;
    uint itemsOff;   // meta offset of the item table, a multiple of 8 words
    uint gridX;      // workgroups along x; items = x + z * gridX
    uint numSlots;   // slots in the pool (bounds check)
    float scale;     // multiplies q·k: the softmax scale / unit
    float unit;      // score unit
    // 1: fused reduction. Each workgroup counts the partials it wrote per
    // (query, KV head); the one that completes a query merges the query's
    // partials (the inverse index at offsetsOff/listOff, in list order) into
    // Out, so reduce_partials does not run. 0: partials only.
    uint fuse;
    uint offsetsOff; // meta offset of numQueries+1 offsets into the list
    uint listOff;    // meta offset of each query's partial indices
} pc;

shared vec4 sQ[R * KS];
shared vec4 sKV[B * KS];
shared vec4 sP[B * PS];        // [token][row] scores
shared vec4 sPr[B * PS];       // [token][row] probabilities (separate: rows are read whole for the max)
shared uint sMask[B * MW];
shared uint sSlot[2u * B];     // slot lists of the current and the next tile
shared float sPart[WG];        // [part][row] partial row sums
shared float sM[R];
shared float sL[R];
shared float sMNew[R];
shared float sAlpha[R];
shared uint sRowQuery[R];      // item-local query index of each row, ~0u when unused
shared uint sBad[R];           // the row saw a non-finite score

#include "include/float_bits.glsl"

// K and V of the next tile in registers (raw words: fp16 keeps two per
// vec4). K is fetched right after the current K is stored and V right after
// the current V is stored, so each load has a whole tile of math to land.
uvec2 stageK16[NL];
uvec4 stageK32[NL];
uvec2 stageV16[NL];
uvec4 stageV32[NL];

// Slot of token t of the tile whose slot list is in half buf of sSlot;
// ~0u past the item's end (and any bad slot) reads as zeros.
void fetchTile(uint buf, uint head, bool isV) {
    [[unroll]] for (uint i = 0u; i < NL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        uvec2 w16 = uvec2(0u);
        uvec4 w32 = uvec4(0u);
        if (idx < B * D4) {
            uint slot = sSlot[buf * B + idx / D4];
            if (slot < pc.numSlots) {
                uint at = (slot * KVH + head) * D4 + idx % D4;
                if (KV_F16 != 0u) {
                    w16 = isV ? v16[at] : k16[at];
                } else {
                    w32 = isV ? v32[at] : k32[at];
                }
            }
        }
        if (isV) {
            stageV16[i] = w16;
            stageV32[i] = w32;
        } else {
            stageK16[i] = w16;
            stageK32[i] = w32;
        }
    }
}

void storeTile(bool isV) {
    [[unroll]] for (uint i = 0u; i < NL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        if (idx < B * D4) {
            uvec2 w16 = isV ? stageV16[i] : stageK16[i];
            uvec4 w32 = isV ? stageV32[i] : stageK32[i];
            vec4 x = KV_F16 != 0u ? vec4(unpackHalf2x16(w16.x), unpackHalf2x16(w16.y)) : uintBitsToFloat(w32);
            sKV[(idx / D4) * KS + idx % D4] = x;
        }
    }
}

// Mask words of the tile starting at token first, for the row tile's
// queries (words word0 ..): thread-strided like sMask.
void loadMask(out uint words[MWL], uint first, uint tokCount, uint maskOff, uint maskWords, uint word0) {
    [[unroll]] for (uint i = 0u; i < MWL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        uint t = idx / MW;
        uint w = word0 + idx % MW;
        words[i] = (maskWords != 0u && idx < B * MW && first + t < tokCount && w < maskWords)
            ? meta[maskOff + (first + t) * maskWords + w] : 0u;
    }
}

float score(uint t, uint r) {
    return sP[t * PS + r / 4u][r % 4u];
}

// Scratch floats of the fused reduction, in the K/V tile (free by then).
const uint SCRATCH = B * KS * 4u;
float scratch(uint i) {
    return sKV[i / 4u][i % 4u];
}
void setScratch(uint i, float x) {
    sKV[i / 4u][i % 4u] = x;
}

// The fused reduction's merge (mergeQuery, fusedMerge) over sSlot (the
// partial list, 2B entries) and sPart (flags, WG entries); every step is
// spread over the workgroup so that its global loads overlap (a query's
// merge is on the dispatch's critical path).
#define MERGE_LIST sSlot
#define MERGE_FLAGS sPart
#include "include/fused_merge.glsl"

void main() {
    uint item = gl_WorkGroupID.x + gl_WorkGroupID.z * pc.gridX;
    if (item >= pc.nItems) {
        return; // whole workgroup leaves together
    }
    uint head = gl_WorkGroupID.y;
    ItemRecord it = items[pc.itemsOff / 8u + item];
    uint tokStart = it.slotsOff;
    uint tokCount = it.numSlots;
    uint qStart = it.queriesOff;
    uint qCount = it.numQueries;
    uint maskOff = it.maskOff;
    uint maskWords = it.maskWords;
    uint partialBase = it.partialBase;
    uint tid = gl_LocalInvocationIndex;
    float qScale = pc.scale * LOG2E;

    // Passes = row tiles x token tiles (an item without tokens still runs
    // its row tiles), compared without overflowing. An item over the cap
    // runs no token tiles and at most MAX_PASSES row tiles, all poisoned:
    // no loop of its own, so the common path keeps its code.
    uint rows = min(qCount, MAX_PASSES * R) * G;
    bool overCap = qCount > MAX_PASSES * R || tokCount > MAX_PASSES * B;
    if (!overCap) {
        uint rowTiles = (rows + R - 1u) / R;
        uint tokTiles = max((tokCount + B - 1u) / B, 1u);
        overCap = rowTiles * tokTiles > MAX_PASSES;
    }
    if (overCap) {
        rows = min(rows, MAX_PASSES * R);
        tokCount = 0u;
    }

    uint tok = tid % B;            // scores: token and first row
    uint sr0 = (tid / B) * RT;
    uint dg = tid % DG;            // output: column group and first row
    uint vr0 = (tid / DG) * RV;
    bool pvThread = tid < RGV * DG;
    uint smRow = tid % R;          // softmax: row and part
    uint smPart = tid / R;

    for (uint rowTile = 0u; rowTile < rows; rowTile += R) {
        uint tileRows = min(R, rows - rowTile);
        uint word0 = (rowTile / G) >> 5u;   // first mask word of the tile's queries
        if (tid < R) {
            uint row = rowTile + tid;
            sRowQuery[tid] = tid < tileRows ? row / G : ~0u;
            sM[tid] = NEG_INF;
            sL[tid] = 0.0;
            sBad[tid] = overCap ? 1u : 0u;
        }
        for (uint idx = tid; idx < R * D4; idx += WG) {
            uint r = idx / D4;
            vec4 x = vec4(0.0);
            if (r < tileRows) {
                uint row = rowTile + r;
                uint query = meta[qStart + row / G];
                x = q4[(query * QH + head * G + row % G) * D4 + idx % D4] * qScale;
            }
            sQ[r * KS + idx % D4] = x;
        }
        vec4 acc[RV * DV];
        [[unroll]] for (uint a = 0u; a < RV * DV; a++) {
            acc[a] = vec4(0.0);
        }
        bool qkActive = sr0 < tileRows;
        bool pvActive = pvThread && vr0 < tileRows;

        // Prologue: slots of tiles 0 (shared) and 1 (register), the mask
        // words of tile 0, then K and V of tile 0.
        uint slotNext = ~0u;
        if (tid < B) {
            sSlot[tid] = tid < tokCount ? meta[tokStart + tid] : ~0u;
            slotNext = B + tid < tokCount ? meta[tokStart + B + tid] : ~0u;
        }
        uint maskNext[MWL];
        loadMask(maskNext, 0u, tokCount, maskOff, maskWords, word0);
        barrier();   // row state, Q and slots are ready (also for items without tokens)
        fetchTile(0u, head, false);
        fetchTile(0u, head, true);

        for (uint first = 0u; first < tokCount; first += B) {
            uint count = min(B, tokCount - first);
            uint next = first + B;
            uint nb = ((first / B) + 1u) & 1u;   // sSlot half of the next tile

            // 1. K, mask words and the next tile's slots to shared memory;
            //    then fetch the next K, slots and mask words.
            storeTile(false);
            [[unroll]] for (uint i = 0u; i < MWL; i++) {
                uint idx = tid + i * WG;
                if (idx < B * MW) {
                    sMask[idx] = maskNext[i];
                }
            }
            if (tid < B) {
                sSlot[nb * B + tid] = slotNext;
            }
            barrier();
            if (next < tokCount) {
                fetchTile(nb, head, false);
                loadMask(maskNext, next, tokCount, maskOff, maskWords, word0);
                if (tid < B) {
                    slotNext = next + B + tid < tokCount ? meta[tokStart + next + B + tid] : ~0u;
                }
            }

            // 2. Scores of this thread's rows and tokens.
            if (qkActive) {
                // vec4 partial sums: four independent FMA chains per row.
                vec4 s4[RT];
                [[unroll]] for (uint i = 0u; i < RT; i++) {
                    s4[i] = vec4(0.0);
                }
                [[dont_unroll]] for (uint j0 = 0u; j0 < D4; j0 += JU) [[unroll]] for (uint jj = 0u; jj < JU; jj++) {
                    uint j = j0 + jj;
                    vec4 k = sKV[tok * KS + j];
                    [[unroll]] for (uint i = 0u; i < RT; i++) {
                        s4[i] = fma(sQ[(sr0 + i) * KS + j], k, s4[i]);
                    }
                }
                [[unroll]] for (uint i = 0u; i < RT; i++) {
                    uint r = sr0 + i;
                    uint qi = sRowQuery[r];
                    bool seen = tok < count && qi != ~0u;
                    if (seen && maskWords != 0u) {
                        uint w = (qi >> 5u) - word0;
                        seen = w < MW && ((sMask[tok * MW + w] >> (qi & 31u)) & 1u) != 0u;
                    }
                    float x = (s4[i].x + s4[i].y) + (s4[i].z + s4[i].w);
                    if (seen && nonFinite(x)) {
                        atomicOr(sBad[r], 1u);   // rare; an atomic keeps it race-free
                        x = NEG_INF;             // keeps the row's softmax free of NaN
                    }
                    sP[tok * PS + r / 4u][r % 4u] = seen ? x : NEG_INF;
                }
            }
            barrier();

            // 3. Online softmax; V to shared memory; fetch the next K.
            {
                uint t0 = smPart * TPP;
                float partSum = 0.0;
                if (smRow < tileRows) {
                    float mOld = sM[smRow];
                    float mNew = mOld;
                    [[unroll]] for (uint t = 0u; t < B; t++) {
                        mNew = max(mNew, score(t, smRow));
                    }
                    [[unroll]] for (uint t = t0; t < t0 + TPP; t++) {
                        float x = score(t, smRow);
                        float p = x == NEG_INF ? 0.0 : exp2((x - mNew) * pc.unit);
                        sPr[t * PS + smRow / 4u][smRow % 4u] = p;
                        partSum += p;
                    }
                    if (smPart == 0u) {
                        sMNew[smRow] = mNew;
                        sAlpha[smRow] = mOld == NEG_INF ? 0.0 : exp2((mOld - mNew) * pc.unit);
                    }
                } else {
                    [[unroll]] for (uint t = t0; t < t0 + TPP; t++) {
                        sPr[t * PS + smRow / 4u][smRow % 4u] = 0.0;
                    }
                    if (smPart == 0u) {
                        sMNew[smRow] = NEG_INF;
                        sAlpha[smRow] = 0.0;
                    }
                }
                sPart[smPart * R + smRow] = partSum;
            }
            storeTile(true);
            barrier();
            if (next < tokCount) {
                fetchTile(nb, head, true);
            }

            // 4. Row state and the weighted sum of V.
            if (tid < R) {
                float sum = 0.0;
                [[unroll]] for (uint p = 0u; p < PARTS; p++) {
                    sum += sPart[p * R + tid];
                }
                sL[tid] = sL[tid] * sAlpha[tid] + sum;
                sM[tid] = sMNew[tid];
            }
            if (pvActive) {
                [[unroll]] for (uint i = 0u; i < RV; i++) {
                    float alpha = vr0 + i < R ? sAlpha[vr0 + i] : 0.0;
                    [[unroll]] for (uint c = 0u; c < DV; c++) {
                        acc[i * DV + c] *= alpha;
                    }
                }
                // Tokens past count have zero V and zero probability.
                [[dont_unroll]] for (uint t0 = 0u; t0 < B; t0 += TU) [[unroll]] for (uint tt = 0u; tt < TU; tt++) {
                    uint t = t0 + tt;
                    float p[RV];
                    if (PV4) {
                        [[unroll]] for (uint i = 0u; i < RV; i += 4u) {
                            vec4 p4 = sPr[t * PS + (vr0 + i) / 4u];
                            p[i] = p4.x;
                            p[i + 1u] = p4.y;
                            p[i + 2u] = p4.z;
                            p[i + 3u] = p4.w;
                        }
                    } else {
                        [[unroll]] for (uint i = 0u; i < RV; i++) {
                            uint r = vr0 + i;
                            p[i] = r < R ? sPr[t * PS + r / 4u][r % 4u] : 0.0;
                        }
                    }
                    [[unroll]] for (uint c = 0u; c < DV; c++) {
                        uint col = dg + c * DG;
                        if (DG * DV == D4 || col < D4) {
                            vec4 v = sKV[t * KS + col];
                            [[unroll]] for (uint i = 0u; i < RV; i++) {
                                acc[i * DV + c] = fma(vec4(p[i]), v, acc[i * DV + c]);
                            }
                        }
                    }
                }
            }
            barrier();
        }

        // Normalised partial output and log-sum-exp (natural log) per row.
        if (pvActive) {
            [[unroll]] for (uint i = 0u; i < RV; i++) {
                uint r = vr0 + i;
                if (r >= R || sRowQuery[r] == ~0u) {
                    continue;
                }
                uint qi = sRowQuery[r];
                uint g = (rowTile + r) % G;
                uint p = (partialBase + qi) * QH + head * G + g;
                float l = sL[r];
                float lse = l > 0.0 ? (sM[r] + log2(l) / pc.unit) * LN2 : NEG_INF;
                // +Inf: finite scores so large that the log-sum-exp overflows.
                bool bad = sBad[r] != 0u || (nonFinite(lse) && lse != NEG_INF);
                [[unroll]] for (uint c = 0u; c < DV; c++) {
                    uint col = dg + c * DG;
                    if (DG * DV == D4 || col < D4) {
                        po4[p * D4 + col] = bad ? vec4(NAN) : (l > 0.0 ? acc[i * DV + c] / l : vec4(0.0));
                    }
                }
                if (dg == 0u) {
                    pl[p] = bad ? NAN : lse;
                }
            }
        }
        barrier();
    }
    if (pc.fuse == 0u) {
        return;
    }
    fusedMerge(qStart, min(qCount, MAX_PASSES * R), head);
}

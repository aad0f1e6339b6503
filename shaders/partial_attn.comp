#version 450
#extension GL_EXT_control_flow_attributes : require
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
//   1. K of the tile (converted from fp16) and the tile's mask words go to
//      shared memory; V of the tile is fetched into registers meanwhile;
//   2. scores S = Q K^T: each thread owns an RT x BT register tile, so every
//      shared-memory read feeds several FMAs (Q reads are warp broadcasts);
//   3. online softmax in the log2 domain (Q is pre-scaled by scale*log2 e),
//      WG/R threads per row, probabilities in a second buffer; V goes to shared memory, the next tile's K is
//      fetched into registers;
//   4. O = diag(alpha) O + P V: each thread owns RV rows x DV vec4 columns.
// Four barriers per tile; each row's normalised output and log-sum-exp are
// written once as a partial result for reduce_partials.
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

// Scores: RT rows x BT tokens per thread; tokens tg, tg+TG, ... so a warp's
// K reads hit distinct padded rows.
const uint S_PER = (R * B) / WG;
const uint BT = S_PER < 4u ? S_PER : 4u;
const uint RT = S_PER / BT;
const uint TG = B / BT;
// Output: RV = 4 rows (one vec4 of P) x DV vec4 columns dg, dg+DG, ...
const uint RV = 4u;
const uint RGV = R / RV;
const uint DV = (D4 * RGV + WG - 1u) / WG;
const uint DG = (D4 + DV - 1u) / DV;
// Softmax: PARTS threads per row, TPP tokens each.
const uint PARTS = WG / R;
const uint TPP = B / PARTS;
// Staging: vec4s of a K or V tile per thread.
const uint NL = (B * D4 + WG - 1u) / WG;
// Mask words a row tile's queries can span.
const uint MW = (R - 1u) / 32u + 2u;

layout(set = 0, binding = 0) readonly buffer Qbuf { vec4 q4[]; };     // [query][QH][D]
// K and V are read 4 elements at a time: fp16 as uvec2, fp32 as uvec4
// (aliased views of the same binding).
layout(set = 0, binding = 1) readonly buffer K16 { uvec2 k16[]; };
layout(set = 0, binding = 1) readonly buffer K32 { uvec4 k32[]; };
layout(set = 0, binding = 2) readonly buffer V16 { uvec2 v16[]; };
layout(set = 0, binding = 2) readonly buffer V32 { uvec4 v32[]; };
layout(set = 0, binding = 3) readonly buffer Meta { uint meta[]; };
layout(set = 0, binding = 4) writeonly buffer PartO { vec4 po4[]; };  // [partial][QH][D]
layout(set = 0, binding = 5) writeonly buffer PartL { float pl[]; };  // [partial][QH]

layout(push_constant) uniform Push {
    uint nItems;
    uint itemsOff;   // meta offset of the item table, 8 words per item
    uint gridX;      // workgroups along x; items = x + z * gridX
    uint numSlots;   // slots in the pool (bounds check)
    float scale;
} pc;

shared vec4 sQ[R * KS];
shared vec4 sKV[B * KS];
shared vec4 sP[B * PS];        // [token][row] scores
shared vec4 sPr[B * PS];       // [token][row] probabilities (separate: rows are read whole for the max)
shared uint sMask[B * MW];
shared float sPart[WG];        // [part][row] partial row sums
shared float sM[R];
shared float sL[R];
shared float sMNew[R];
shared float sAlpha[R];
shared uint sRowQuery[R];      // item-local query index of each row, ~0u when unused

#define NEG_INF uintBitsToFloat(0xff800000u)
const float LOG2E = 1.4426950408889634;
const float LN2 = 0.6931471805599453;

// Raw K or V words of the tile being staged: fp16 keeps two words per vec4.
uvec2 stage16[NL];
uvec4 stage32[NL];

void fetchTile(uint tokStart, uint first, uint count, uint head, bool isV) {
    [[unroll]] for (uint i = 0u; i < NL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        uint t = idx / D4;
        uvec2 w16 = uvec2(0u);
        uvec4 w32 = uvec4(0u);
        if (idx < B * D4 && t < count) {
            uint slot = meta[tokStart + first + t];
            if (slot < pc.numSlots) {
                uint at = (slot * KVH + head) * D4 + idx % D4;
                if (KV_F16 != 0u) {
                    w16 = isV ? v16[at] : k16[at];
                } else {
                    w32 = isV ? v32[at] : k32[at];
                }
            }
        }
        stage16[i] = w16;
        stage32[i] = w32;
    }
}

void storeTile() {
    [[unroll]] for (uint i = 0u; i < NL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        if (idx < B * D4) {
            vec4 x = KV_F16 != 0u ? vec4(unpackHalf2x16(stage16[i].x), unpackHalf2x16(stage16[i].y))
                                  : uintBitsToFloat(stage32[i]);
            sKV[(idx / D4) * KS + idx % D4] = x;
        }
    }
}

float score(uint t, uint r) {
    return sP[t * PS + r / 4u][r % 4u];
}

void main() {
    uint item = gl_WorkGroupID.x + gl_WorkGroupID.z * pc.gridX;
    if (item >= pc.nItems) {
        return; // whole workgroup leaves together
    }
    uint head = gl_WorkGroupID.y;
    uint base = pc.itemsOff + item * 8u;
    uint tokStart = meta[base + 0u];
    uint tokCount = meta[base + 1u];
    uint qStart = meta[base + 2u];
    uint qCount = meta[base + 3u];
    uint maskOff = meta[base + 4u];
    uint maskWords = meta[base + 5u];
    uint partialBase = meta[base + 6u];
    uint tid = gl_LocalInvocationIndex;
    float qScale = pc.scale * LOG2E;

    uint tg = tid % TG;            // scores: token group and first row
    uint sr0 = (tid / TG) * RT;
    uint dg = tid % DG;            // output: column group and first row
    uint vr0 = (tid / DG) * RV;
    bool pvThread = tid < RGV * DG;
    uint smRow = tid % R;          // softmax: row and part
    uint smPart = tid / R;

    uint rows = qCount * G;
    for (uint rowTile = 0u; rowTile < rows; rowTile += R) {
        uint tileRows = min(R, rows - rowTile);
        uint word0 = (rowTile / G) >> 5u;   // first mask word of the tile's queries
        if (tid < R) {
            uint row = rowTile + tid;
            sRowQuery[tid] = tid < tileRows ? row / G : ~0u;
            sM[tid] = NEG_INF;
            sL[tid] = 0.0;
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
        barrier();   // row state and Q are ready (also for items without tokens)
        bool qkActive = sr0 < tileRows;
        bool pvActive = pvThread && vr0 < tileRows;
        fetchTile(tokStart, 0u, min(B, tokCount), head, false);

        for (uint first = 0u; first < tokCount; first += B) {
            uint count = min(B, tokCount - first);
            uint next = first + B;

            // 1. K and mask words to shared memory; fetch V.
            storeTile();
            if (maskWords != 0u) {
                for (uint i = tid; i < B * MW; i += WG) {
                    uint t = i / MW;
                    uint w = word0 + i % MW;
                    sMask[i] = (t < count && w < maskWords) ? meta[maskOff + (first + t) * maskWords + w] : 0u;
                }
            }
            barrier();
            fetchTile(tokStart, first, count, head, true);

            // 2. Scores of this thread's rows and tokens.
            if (qkActive) {
                float s[RT * BT];
                [[unroll]] for (uint a = 0u; a < RT * BT; a++) {
                    s[a] = 0.0;
                }
                [[unroll]] for (uint j = 0u; j < D4; j++) {
                    vec4 qv[RT];
                    [[unroll]] for (uint i = 0u; i < RT; i++) {
                        qv[i] = sQ[(sr0 + i) * KS + j];
                    }
                    [[unroll]] for (uint b = 0u; b < BT; b++) {
                        vec4 k = sKV[(tg + b * TG) * KS + j];
                        [[unroll]] for (uint i = 0u; i < RT; i++) {
                            float x = s[i * BT + b];
                            x = fma(qv[i].x, k.x, x);
                            x = fma(qv[i].y, k.y, x);
                            x = fma(qv[i].z, k.z, x);
                            x = fma(qv[i].w, k.w, x);
                            s[i * BT + b] = x;
                        }
                    }
                }
                [[unroll]] for (uint b = 0u; b < BT; b++) {
                    uint t = tg + b * TG;
                    [[unroll]] for (uint i = 0u; i < RT; i++) {
                        uint r = sr0 + i;
                        uint qi = sRowQuery[r];
                        bool seen = t < count && qi != ~0u;
                        if (seen && maskWords != 0u) {
                            uint w = (qi >> 5u) - word0;
                            seen = w < MW && ((sMask[t * MW + w] >> (qi & 31u)) & 1u) != 0u;
                        }
                        sP[t * PS + r / 4u][r % 4u] = seen ? s[i * BT + b] : NEG_INF;
                    }
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
                        float p = x == NEG_INF ? 0.0 : exp2(x - mNew);
                        sPr[t * PS + smRow / 4u][smRow % 4u] = p;
                        partSum += p;
                    }
                    if (smPart == 0u) {
                        sMNew[smRow] = mNew;
                        sAlpha[smRow] = mOld == NEG_INF ? 0.0 : exp2(mOld - mNew);
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
            storeTile();
            barrier();
            if (next < tokCount) {
                fetchTile(tokStart, next, min(B, tokCount - next), head, false);
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
                vec4 alpha = vec4(sAlpha[vr0], sAlpha[vr0 + 1u], sAlpha[vr0 + 2u], sAlpha[vr0 + 3u]);
                [[unroll]] for (uint i = 0u; i < RV; i++) {
                    [[unroll]] for (uint c = 0u; c < DV; c++) {
                        acc[i * DV + c] *= alpha[i];
                    }
                }
                // Tokens past count have zero V and zero probability.
                [[unroll]] for (uint t = 0u; t < B; t++) {
                    vec4 p = sPr[t * PS + vr0 / 4u];
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
                uint qi = sRowQuery[r];
                if (qi == ~0u) {
                    continue;
                }
                uint g = (rowTile + r) % G;
                uint p = (partialBase + qi) * QH + head * G + g;
                float l = sL[r];
                [[unroll]] for (uint c = 0u; c < DV; c++) {
                    uint col = dg + c * DG;
                    if (DG * DV == D4 || col < D4) {
                        po4[p * D4 + col] = l > 0.0 ? acc[i * DV + c] / l : vec4(0.0);
                    }
                }
                if (dg == 0u) {
                    pl[p] = l > 0.0 ? (sM[r] + log2(l)) * LN2 : NEG_INF;
                }
            }
        }
        barrier();
    }
}

#version 450
// glslc-target: vulkan1.3
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#extension GL_KHR_shader_subgroup_vote : require
// Partial tree attention on cooperative matrices (VK_KHR_cooperative_matrix):
// the "coopmat" variant of partial_attn (same bindings, push block, item
// records and specialization constants; see partial_attn.comp for what a
// work item is). fp16 K/V only: the host runs the scalar variant for fp32.
//
// A workgroup is RB = R / CM_M row blocks of CM_M rows, one per subgroup
// (the host sizes the workgroup as RB subgroups; should the device run
// smaller subgroups, extra passes cover the rest, larger ones leave
// subgroups idle). The host runs this module in several specializations,
// one per class of items by rows (treeattn: item classes): an item of a
// single query group (at most CM_M rows) runs in a workgroup of one
// subgroup with 16-token tiles, so that many such workgroups stream K/V
// at once on each multiprocessor instead of one 128-row workgroup whose
// other subgroups idle. Per tile of B tokens:
//   1. the workgroup stores the tile's K and V (fp16) and mask words in
//      shared memory, then fetches tile + DEPTH's into registers (DEPTH 2
//      in 64- and 128-row workgroups: two tiles in flight; the slots of a
//      tile are read a tile before its K/V into a shared ring, so fetching
//      K/V never waits on a slot load);
//   2. each subgroup computes its S = Q K^T block (CM_M x B, f16 operands,
//      f32 accumulation) with Q held in A matrices, and stores it;
//   3. online softmax in f32 (log2 domain), lanes of the subgroup split
//      each row, reduced with shuffles; P goes to shared memory as f16;
//      only where a row of the block raised its running max (alpha != 1)
//      do the rows' rescale factors go out as an M x N matrix, written
//      over the score columns each lane read itself (no sync before);
//   4. O = O * alpha (component-wise, skipped when every alpha of the
//      block is 1: multiplying by 1 is exact) + P V on accumulators.
// Two workgroup barriers and two subgroup syncs per tile; the next tile's
// first barrier orders this tile's reads of S/P before their rewrite. The
// normalised output and log-sum-exp of each row go to the partial results.

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D = 128;     // head dim, a multiple of CM_K and CM_N
layout(constant_id = 2) const uint B = 32;      // tokens per tile, a multiple of CM_N and CM_K
layout(constant_id = 3) const uint R = 64;      // rows per row tile, a multiple of CM_M
layout(constant_id = 4) const uint G = 4;       // query heads per KV head
layout(constant_id = 5) const uint KVH = 8;     // KV heads
layout(constant_id = 6) const uint KV_F16 = 1;  // must be 1
layout(constant_id = 7) const uint UNROLL = 4;  // unused here (scalar variant's unrolling)
// The scalar variant's pass cap (same contract); this kernel bounds its
// loops with MAX_TILES and MAX_ROW_TILES below.
layout(constant_id = 8) const uint MAX_PASSES = 48;
layout(constant_id = 9) const uint CM_M = 16;   // cooperative-matrix shape (M x K) * (K x N)
layout(constant_id = 10) const uint CM_N = 16;
layout(constant_id = 11) const uint CM_K = 16;

const uint WG = gl_WorkGroupSize.x;
const uint QH = G * KVH;
const uint D4 = D / 4u;
const uint KS = D4 + 2u;          // f16vec4 stride of K and V rows (16 bytes of padding)
const uint RB = R / CM_M;         // row blocks
const uint SS = B + 4u;           // float stride of a block's score rows
const uint PS = B / 4u + 2u;      // f16vec4 stride of a block's probability rows
const uint SREG = CM_M * SS;      // floats of scratch per row block
const uint PREG = CM_M * PS;      // f16vec4s of probabilities per row block
const uint NL = (B * D4 + WG - 1u) / WG;   // vec4s of a K or V tile per invocation
const uint MW = (R - 1u) / 32u + 2u;       // mask words a row tile's queries can span
const uint MWL = (B * MW + WG - 1u) / WG;
const uint SPT = (B + WG - 1u) / WG;        // slots of a tile per invocation (1 when WG >= B)
const uint DK = D / CM_K;         // A matrices of Q
const uint DN = D / CM_N;         // accumulators of O
const uint BN = B / CM_N;         // score accumulators
const uint BK = B / CM_K;         // P matrices
const uint K4 = CM_K / 4u;
// Q staging: QCK A matrices (QC4 vec4 columns) of all R rows per round in
// sK, at most 16 vec4s per invocation (registers; one round for a
// one-subgroup workgroup of 16 rows at d=128, four for 128 rows).
const uint QCK_FIT = (B * KS) / (R * K4);
const uint QCK_REG = (16u * WG) / (R * K4);
const uint QCK_MIN = QCK_FIT < QCK_REG ? QCK_FIT : QCK_REG;
const uint QCK = QCK_MIN < 1u ? 1u : (QCK_MIN < DK ? QCK_MIN : DK);
const uint QC4 = QCK * K4;
const uint QL = (R * QC4 + WG - 1u) / WG;  // vec4s of Q per invocation and round
const uint QROUNDS = (DK + QCK - 1u) / QCK;
// Rounds of Q in flight at once (registers for 16 vec4s): all four of a
// 128-row tile at d=128, so staging Q waits for one global round trip.
const uint QAHEAD_FIT = 16u / QL;
const uint QAHEAD = QAHEAD_FIT < 1u ? 1u : (QAHEAD_FIT < QROUNDS ? QAHEAD_FIT : QROUNDS);
const uint RPT = (2u * B + WG - 1u) / WG;   // slots of the first two tiles per invocation
// Bounds on loops whose trip counts come from the metadata (the planner
// keeps items far below them: treeattn.MaxTilePasses).
const uint MAX_TILES = 4096u;
const uint MAX_ROW_TILES = 1024u;

layout(set = 0, binding = 0) readonly buffer Qbuf { vec4 q4[]; };     // [query][QH][D]
layout(set = 0, binding = 1) readonly buffer K16 { uvec2 k16[]; };    // fp16 K, 4 elements a word pair
layout(set = 0, binding = 2) readonly buffer V16 { uvec2 v16[]; };
layout(set = 0, binding = 3) readonly buffer Meta { uint meta[]; };
struct ItemRecord {
    uint slotsOff;
    uint numSlots;
    uint queriesOff;
    uint numQueries;
    uint maskOff;
    uint maskWords;
    uint partialBase;
    uint reserved;
};
layout(set = 0, binding = 3) readonly buffer MetaItems { ItemRecord items[]; };
layout(set = 0, binding = 4) writeonly buffer PartO { vec4 po4[]; };  // [partial][QH][D]
layout(set = 0, binding = 5) writeonly buffer PartL { float pl[]; };  // [partial][QH]
// The scalar variant's fused reduction (push constant fuse) writes the
// output and counts partials here; this variant never fuses (the host
// keeps reduce_partials for it), so they are declared for the shared
// contract only.
layout(set = 0, binding = 6) writeonly buffer Out { vec4 o4[]; };
layout(set = 0, binding = 7) coherent buffer Counters { uint counter[]; };

layout(push_constant) uniform Push {
    uint nItems;
    uint itemsOff;
    uint gridX;
    uint numSlots;
    float scale;
    float unit;      // score unit (a power of two; the host passes scale / unit)
    uint fuse;       // the scalar variant's fused reduction: always 0 here
    uint offsetsOff;
    uint listOff;
} pc;

shared f16vec4 sK[B * KS];
shared f16vec4 sV[B * KS];
shared float sS[RB * SREG];       // per row block: scores (alpha in the last CM_N columns), then output staging
shared f16vec4 sP[RB * PREG];     // per row block: Q staging, then probabilities
shared uint sMask[B * MW];
shared uint sSlot[2u * B];        // slots of the next two tiles (ring of two tiles; ~0u past the item)
shared uint sRowQuery[R];         // item-local query of each row of the tile, ~0u when unused
shared uint sRowQ[R];             // its query index (Q buffer), for staging Q
shared float sRowL[R];
shared float sRowM[R];

#define NEG_INF uintBitsToFloat(0xff800000u)
const float LOG2E = 1.4426950408889634;
const float LN2 = 0.6931471805599453;

// K/V tiles in flight in registers: two where a tile is at most 8 word
// pairs of K (and of V) per invocation (64- and 128-row workgroups, whose
// few workgroups per multiprocessor would otherwise wait a global round
// trip per tile), one in the one-subgroup class (16 pairs).
const uint DEPTH = NL <= 8u ? 2u : 1u;
uvec2 stK[NL * DEPTH];   // set s of tile t = t % DEPTH at [s * NL..]
uvec2 stV[NL * DEPTH];
uint stMask[MWL * DEPTH];
vec4 stQ[QL * QAHEAD];
uint slotAhead[SPT];     // slots of tile t + DEPTH + 1 while tile t runs

// The subgroup's Q block, output accumulators and its lanes' row state.
coopmat<float16_t, gl_ScopeSubgroup, CM_M, CM_K, gl_MatrixUseA> qA[DK];
coopmat<float, gl_ScopeSubgroup, CM_M, CM_N, gl_MatrixUseAccumulator> acc[DN];
float rowM;
float rowL;

// Round k0's Q columns (QC4 vec4s from A matrix k0) of the row tile's rows
// into registers stQ[at * QL..]; rows past the tile read as zeros.
void fetchQ(uint k0, uint at, uint rowTile, uint tileRows, uint head) {
    [[unroll]] for (uint i = 0u; i < QL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        uint r = idx / QC4;
        uint c4 = k0 * K4 + idx % QC4;
        vec4 x = vec4(0.0);
        if (idx < R * QC4 && r < tileRows && c4 < D4) {
            uint row = rowTile + r;
            x = q4[(sRowQ[r] * QH + head * G + row % G) * D4 + c4];
        }
        stQ[at * QL + i] = x;
    }
}

// K, V and mask words of the tile starting at token first into registers,
// its slots from sSlot[slotBase..]; tokens past the item (and bad slots)
// read as zeros.
void fetchTile(uint first, uint slotBase, uint set, uint tokCount, uint head, uint maskOff, uint maskWords, uint word0) {
    [[unroll]] for (uint i = 0u; i < NL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        uvec2 kw = uvec2(0u);
        uvec2 vw = uvec2(0u);
        uint t = idx / D4;
        if (idx < B * D4 && first + t < tokCount) {
            uint slot = sSlot[slotBase + t];
            if (slot < pc.numSlots) {
                uint at = (slot * KVH + head) * D4 + idx % D4;
                kw = k16[at];
                vw = v16[at];
            }
        }
        stK[set * NL + i] = kw;
        stV[set * NL + i] = vw;
    }
    [[unroll]] for (uint i = 0u; i < MWL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        uint t = idx / MW;
        uint w = word0 + idx % MW;
        stMask[set * MWL + i] = (maskWords != 0u && idx < B * MW && first + t < tokCount && w < maskWords)
            ? meta[maskOff + (first + t) * maskWords + w] : 0u;
    }
}

// The tile in register set set into shared memory.
void storeTile(uint set) {
    [[unroll]] for (uint i = 0u; i < NL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        if (idx < B * D4) {
            uint at = (idx / D4) * KS + idx % D4;
            uvec2 kw = stK[set * NL + i];
            uvec2 vw = stV[set * NL + i];
            sK[at] = f16vec4(unpackFloat2x16(kw.x), unpackFloat2x16(kw.y));
            sV[at] = f16vec4(unpackFloat2x16(vw.x), unpackFloat2x16(vw.y));
        }
    }
    [[unroll]] for (uint i = 0u; i < MWL; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        if (idx < B * MW) {
            sMask[idx] = stMask[set * MWL + i];
        }
    }
}

void subgroupSync() {
    subgroupMemoryBarrierShared();
    subgroupBarrier();
}

// One tile of the item: stores tile's K/V (register set set = tile %
// DEPTH) in shared memory, moves the slot ring on (tile + DEPTH + 1's
// slots take the entry of tile + DEPTH - 1, fetched already), fetches tile
// + DEPTH into the freed registers and reads the slots of tile + DEPTH + 2,
// then computes the subgroup's row block on the tile.
void tileStep(uint tile, uint set, uint nTiles, uint tokStart, uint tokCount, uint head, uint maskOff, uint maskWords,
              uint word0, bool blockOn, bool rowValid, bool rowLane, uint qi, uint part, uint lpr, uint myRow,
              uint sBase, uint pBase, float qScale) {
    uint tid = gl_LocalInvocationIndex;
    uint first = tile * B;
    uint count = min(B, tokCount - first);
    barrier();   // the previous tile's K/V, mask and ring entry are consumed
    storeTile(set);
    [[unroll]] for (uint i = 0u; i < SPT; i++) {
        uint t = tid + i * WG;
        if (t < B) {
            sSlot[((tile + DEPTH + 1u) & 1u) * B + t] = slotAhead[i];
        }
    }
    barrier();
    if (tile + DEPTH < nTiles) {
        fetchTile(first + DEPTH * B, ((tile + DEPTH) & 1u) * B, set, tokCount, head, maskOff, maskWords, word0);
    }
    [[unroll]] for (uint i = 0u; i < SPT; i++) {
        uint t = first + (DEPTH + 2u) * B + tid + i * WG;
        slotAhead[i] = (tid + i * WG < B && t < tokCount) ? meta[tokStart + t] : ~0u;
    }
    if (!blockOn) {
        return;
    }

    // 2. S = Q K^T for the block (K^T read column-major from sK).
    [[unroll]] for (uint n = 0u; n < BN; n++) {
        coopmat<float, gl_ScopeSubgroup, CM_M, CM_N, gl_MatrixUseAccumulator> s =
            coopmat<float, gl_ScopeSubgroup, CM_M, CM_N, gl_MatrixUseAccumulator>(0.0);
        [[unroll]] for (uint k = 0u; k < DK; k++) {
            coopmat<float16_t, gl_ScopeSubgroup, CM_K, CM_N, gl_MatrixUseB> kB;
            coopMatLoad(kB, sK, n * CM_N * KS + k * (CM_K / 4u), KS, gl_CooperativeMatrixLayoutColumnMajor);
            s = coopMatMulAdd(qA[k], kB, s);
        }
        coopMatStore(s, sS, sBase + n * CM_N, SS, gl_CooperativeMatrixLayoutRowMajor);
    }
    subgroupSync();

    // 3. Online softmax of the lane's row (log2 domain). A lane reads the
    // tokens t = part (mod lpr) of its row; the max pass visits them
    // rotated by lpr for rows 8..15 of the block, so that the rows on the
    // same banks (stride SS = 4 mod 32 words) read different ones at once
    // (max does not depend on the order; the sum pass keeps token order).
    // The seen bits of the max pass serve the sum pass (B <= 32). Loops
    // count B / lpr steps (lpr, a power of two, divides B and CM_N): a
    // constant trip count where the compiler knows the subgroup size, so
    // the loads of a pass can be issued together.
    const bool SEEN_BITS = B <= 32u;
    uint seenBits = 0u;
    uint wq = (qi >> 5u) - word0;   // the row's mask word and bit
    uint bq = qi & 31u;
    float mNew = rowM;
    if (rowValid) {
        uint rot = (myRow & 8u) != 0u ? lpr : 0u;
        [[unroll]] for (uint i = 0u; i < B / lpr; i++) {
            uint t = (part + i * lpr + rot) % B;
            bool seen = t < count;
            if (seen && maskWords != 0u) {
                seen = wq < MW && ((sMask[t * MW + wq] >> bq) & 1u) != 0u;
            }
            if (seen) {
                seenBits |= 1u << (t & 31u);
                mNew = max(mNew, sS[sBase + myRow * SS + t] * qScale);
            }
        }
    }
    for (uint o = 1u; o < lpr; o <<= 1u) {
        mNew = max(mNew, subgroupShuffleXor(mNew, o));
    }
    float sum = 0.0;
    if (rowLane) {
        [[unroll]] for (uint i = 0u; i < B / lpr; i++) {
            uint t = part + i * lpr;
            float p = 0.0;
            if (rowValid && mNew != NEG_INF) {
                bool seen;
                if (SEEN_BITS) {
                    seen = ((seenBits >> (t & 31u)) & 1u) != 0u;
                } else {
                    seen = t < count;
                    if (seen && maskWords != 0u) {
                        seen = wq < MW && ((sMask[t * MW + wq] >> bq) & 1u) != 0u;
                    }
                }
                if (seen) {
                    p = exp2((sS[sBase + myRow * SS + t] * qScale - mNew) * pc.unit);
                }
            }
            float16_t ph = float16_t(p);
            sP[pBase + myRow * PS + t / 4u][t % 4u] = ph;
            sum += float(ph);   // the sum of what P V adds
        }
    }
    for (uint o = 1u; o < lpr; o <<= 1u) {
        sum += subgroupShuffleXor(sum, o);
    }
    float alpha = (rowM == NEG_INF) ? 0.0 : exp2((rowM - mNew) * pc.unit);
    // A row still at -inf has added only zero P (its O rows are zeros, or
    // NaN from non-finite V): scaling them by its alpha 0 changes nothing.
    bool rescale = subgroupAny(rowValid && rowM != NEG_INF && alpha != 1.0);
    if (rowValid) {
        rowL = rowL * alpha + sum;
        rowM = mNew;
    }
    // Alpha over columns SS - CM_N.. of the row's scores: each lane writes
    // only columns it read itself (t = part mod lpr), so no sync before.
    const uint AC = SS - CM_N;
    if (rescale && rowLane) {
        uint c0 = (part + lpr - AC % lpr) % lpr;
        [[unroll]] for (uint i = 0u; i < CM_N / lpr; i++) {
            sS[sBase + myRow * SS + AC + c0 + i * lpr] = alpha;
        }
    }
    subgroupSync();   // P (and alpha) are in shared memory

    // 4. O = O * alpha + P V.
    if (rescale) {
        coopmat<float, gl_ScopeSubgroup, CM_M, CM_N, gl_MatrixUseAccumulator> al;
        coopMatLoad(al, sS, sBase + AC, SS, gl_CooperativeMatrixLayoutRowMajor);
        [[unroll]] for (uint j = 0u; j < DN; j++) {
            acc[j] = acc[j] * al;
        }
    }
    [[unroll]] for (uint k = 0u; k < BK; k++) {
        coopmat<float16_t, gl_ScopeSubgroup, CM_M, CM_K, gl_MatrixUseA> pA;
        coopMatLoad(pA, sP, pBase + k * (CM_K / 4u), PS, gl_CooperativeMatrixLayoutRowMajor);
        [[unroll]] for (uint j = 0u; j < DN; j++) {
            coopmat<float16_t, gl_ScopeSubgroup, CM_K, CM_N, gl_MatrixUseB> vB;
            coopMatLoad(vB, sV, k * CM_K * KS + j * (CM_N / 4u), KS, gl_CooperativeMatrixLayoutRowMajor);
            acc[j] = coopMatMulAdd(pA, vB, acc[j]);
        }
    }
    // No sync here: the next tile (or the output step) starts with one.
}

void main() {
    uint item = gl_WorkGroupID.x + gl_WorkGroupID.z * pc.gridX;
    if (item >= pc.nItems || KV_F16 == 0u) {
        return; // whole workgroup leaves together
    }
    uint head = gl_WorkGroupID.y;
    ItemRecord it = items[pc.itemsOff / 8u + item];
    uint tokStart = it.slotsOff;
    uint tokCount = it.numSlots;
    uint qStart = it.queriesOff;
    uint maskOff = it.maskOff;
    uint maskWords = it.maskWords;
    uint tid = gl_LocalInvocationIndex;
    float qScale = pc.scale * LOG2E;

    uint sg = gl_SubgroupID;
    uint nsg = gl_NumSubgroups;
    uint lane = gl_SubgroupInvocationID;
    // Softmax: LPR lanes per row (the host keeps subgroups >= CM_M).
    uint lpr = max(1u, gl_SubgroupSize / CM_M);
    uint myRow = lane / lpr;     // row of the block
    uint part = lane % lpr;
    bool rowLane = myRow < CM_M;
    uint passes = (RB + nsg - 1u) / nsg;

    // The slots of the first DEPTH + 2 tiles, read once per item (with the
    // row setup's reads, not after them): tiles 0 and 1 fill the ring,
    // tile 2 refills entry 0 after tile 0 is fetched (DEPTH 2), tile
    // DEPTH + 1 is the first step's slotAhead.
    uint ringInit[RPT];
    [[unroll]] for (uint i = 0u; i < RPT; i++) {
        uint t = tid + i * WG;
        ringInit[i] = (t < 2u * B && t < tokCount) ? meta[tokStart + t] : ~0u;
    }
    uint aheadInit[SPT];
    uint refillInit[SPT];
    [[unroll]] for (uint i = 0u; i < SPT; i++) {
        uint t = (DEPTH + 1u) * B + tid + i * WG;
        aheadInit[i] = (tid + i * WG < B && t < tokCount) ? meta[tokStart + t] : ~0u;
        t = 2u * B + tid + i * WG;
        refillInit[i] = (DEPTH > 1u && tid + i * WG < B && t < tokCount) ? meta[tokStart + t] : ~0u;
    }

    uint rows = min(it.numQueries, MAX_ROW_TILES * R) * G;
    for (uint rowTile = 0u; rowTile < rows; rowTile += R) {
        uint tileRows = min(R, rows - rowTile);
        uint word0 = (rowTile / G) >> 5u;
        for (uint r = tid; r < R; r += WG) {
            sRowQuery[r] = r < tileRows ? (rowTile + r) / G : ~0u;
            sRowQ[r] = r < tileRows ? meta[qStart + (rowTile + r) / G] : 0u;
        }
        barrier();

        for (uint pass = 0u; pass < passes; pass++) {
            uint rb = sg + pass * nsg;
            bool blockOn = rb < RB && rb * CM_M < tileRows;   // subgroup-uniform
            uint sBase = rb * SREG;
            uint pBase = rb * PREG;

            // Slots of tiles 0 and 1 into the ring, the next into registers,
            // and the first DEPTH tiles' K/V on their way while Q is staged.
            barrier();   // the previous pass is done with the ring
            [[unroll]] for (uint i = 0u; i < RPT; i++) {
                uint t = tid + i * WG;
                if (t < 2u * B) {
                    sSlot[t] = ringInit[i];
                }
            }
            [[unroll]] for (uint i = 0u; i < SPT; i++) {
                slotAhead[i] = aheadInit[i];
            }
            barrier();
            fetchTile(0u, 0u, 0u, tokCount, head, maskOff, maskWords, word0);
            if (DEPTH > 1u) {
                fetchTile(B, B, 1u, tokCount, head, maskOff, maskWords, word0);
                barrier();   // entry 0 (tile 0's slots) is read: it takes tile 2's
                [[unroll]] for (uint i = 0u; i < SPT; i++) {
                    uint t = tid + i * WG;
                    if (t < B) {
                        sSlot[t] = refillInit[i];
                    }
                }
            }
            [[unroll]] for (uint a = 0u; a < QAHEAD; a++) {
                fetchQ(a * QCK, a, rowTile, tileRows, head);
            }

            // Q of the row tile in A matrices, staged as f16 through sK in
            // rounds of QC4 vec4 columns: every invocation holds its share
            // of QAHEAD rounds in registers, loaded at once; a round's
            // registers take the round QAHEAD later once stored.
            [[unroll]] for (uint j = 0u; j < DN; j++) {
                acc[j] = coopmat<float, gl_ScopeSubgroup, CM_M, CM_N, gl_MatrixUseAccumulator>(0.0);
            }
            [[unroll]] for (uint k0 = 0u; k0 < DK; k0 += QCK) {
                uint at = (k0 / QCK) % QAHEAD;
                barrier();   // sK is free (the previous pass or row tile is done with it)
                [[unroll]] for (uint i = 0u; i < QL; i++) {
                    uint idx = tid + i * WG;
                    if (idx < R * QC4) {
                        sK[idx] = f16vec4(stQ[at * QL + i]);
                    }
                }
                if (k0 + QAHEAD * QCK < DK) {
                    fetchQ(k0 + QAHEAD * QCK, at, rowTile, tileRows, head);
                }
                barrier();
                if (blockOn) {
                    [[unroll]] for (uint k = 0u; k < QCK; k++) {
                        if (k0 + k < DK) {
                            coopMatLoad(qA[k0 + k], sK, rb * CM_M * QC4 + k * K4, QC4, gl_CooperativeMatrixLayoutRowMajor);
                        }
                    }
                }
            }
            // Row state of this lane's row (replicated over its LPR lanes).
            uint rr = rb * CM_M + myRow;
            bool rowValid = blockOn && rowLane && rr < tileRows;
            uint qi = rowValid ? sRowQuery[rr] : ~0u;
            rowM = NEG_INF;
            rowL = 0.0;

            uint nTiles = min((tokCount + B - 1u) / B, MAX_TILES);
            for (uint tile = 0u; tile < nTiles; tile += DEPTH) {
                tileStep(tile, 0u, nTiles, tokStart, tokCount, head, maskOff, maskWords, word0, blockOn, rowValid, rowLane,
                         qi, part, lpr, myRow, sBase, pBase, qScale);
                if (DEPTH > 1u && tile + 1u < nTiles) {
                    tileStep(tile + 1u, 1u, nTiles, tokStart, tokCount, head, maskOff, maskWords, word0, blockOn, rowValid,
                             rowLane, qi, part, lpr, myRow, sBase, pBase, qScale);
                }
            }

            // Normalised partial output and log-sum-exp per row.
            if (blockOn) {
                subgroupSync();   // the last tile's reads of alpha and P are done
                if (rowValid && part == 0u) {
                    sRowL[rr] = rowL;
                    sRowM[rr] = rowM;
                }
                const uint N4 = CM_N / 4u;
                [[unroll]] for (uint j = 0u; j < DN; j++) {
                    coopMatStore(acc[j], sS, sBase, CM_N, gl_CooperativeMatrixLayoutRowMajor);
                    subgroupSync();
                    for (uint e = lane; e < CM_M * N4; e += gl_SubgroupSize) {
                        uint r = e / N4;
                        uint c4 = e % N4;
                        uint rw = rb * CM_M + r;
                        if (rw < tileRows && sRowQuery[rw] != ~0u) {
                            uint p = (it.partialBase + sRowQuery[rw]) * QH + head * G + (rowTile + rw) % G;
                            float lr = sRowL[rw];
                            uint at = sBase + r * CM_N + c4 * 4u;
                            vec4 x = vec4(sS[at], sS[at + 1u], sS[at + 2u], sS[at + 3u]);
                            po4[p * D4 + j * N4 + c4] = lr > 0.0 ? x / lr : vec4(0.0);
                        }
                    }
                    subgroupSync();
                }
                if (rowValid && part == 0u) {
                    uint p = (it.partialBase + qi) * QH + head * G + (rowTile + rr) % G;
                    pl[p] = rowL > 0.0 ? (rowM + log2(rowL) / pc.unit) * LN2 : NEG_INF;
                }
            }
        }
        barrier();
    }
}

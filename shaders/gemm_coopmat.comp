#version 450
// glslc-target: vulkan1.3
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_KHR_shader_subgroup_basic : require
// y[r][o] (+)= sum_i x[r][i] * W[o][i] on cooperative matrices
// (VK_KHR_cooperative_matrix): the "coopmat" variant of gemm (same
// bindings, push block and specialization constants as gemm.comp). x is
// float32 [n][inDim], or f16 with AF16 = 1; W is GGUF rows in their file encoding (any type of
// include/weights.glsl), dequantized while a tile is loaded. Operands are
// rounded to f16, products accumulate in f32.
//
// A workgroup owns a TM x TN tile of y (TM activation rows, TN weight
// rows) and walks the input dimension in steps of TK:
//   1. the tile's TM x TK activations and TN x TK weights, fetched into
//      registers one step ahead by octets (8 elements, converted to f16
//      there; F16 weight rows of a multiple of 8 by one 16-byte load), are
//      stored in shared memory, 16 bytes at a time;
//   2. each subgroup multiplies its SM x SN sub-tile: SM/CM_M A matrices
//      (rows of x) times SN/CM_N B matrices (W^T, read column-major from
//      the weight rows) into f32 accumulators.
// With STAGES = 2 the tiles alternate between two shared buffers: the next
// step's tiles are stored while others may still read the current one, one
// barrier per step (STAGES = 1: two barriers, half the shared memory).
// PREFETCH = 2 fetches two steps ahead into two register sets.
// The host sizes the workgroup as (TM/SM)*(TN/SN) subgroups, doubled
// while an invocation would fetch more than MAXL octets of a tile (the
// extra subgroups only fetch); should the device run fewer (smaller
// subgroups), extra passes over the input cover the remaining sub-tiles,
// larger ones leave subgroups idle. Every output
// is one accumulator element written once (no atomics: reruns are
// bit-identical). The result goes out through shared memory, so ragged
// edges and ADD need no special tiles.
//
// ADD = 1 adds the product to y (the residual stream) instead of storing it.
// Stacked weights: output columns (yOff + weight row) from split1 on go to
// y1 (rows of stride1 floats), from split2 on to y2, so that one dispatch
// computes Q, K and V (or gate and up) into their own buffers.
// Split-K: grid z cuts the input dimension into splits of kSteps steps;
// with more than one, each split's sums go to part (no ADD) and
// gemm_reduce adds them up in split order (deterministic), so that a few
// output tiles over a long input still fill the GPU.

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint WTYPE = 0u;  // W_* of include/weights.glsl
layout(constant_id = 2) const uint ADD = 0u;
layout(constant_id = 3) const uint TM = 64u;    // activation rows per workgroup, a multiple of SM
layout(constant_id = 4) const uint TN = 128u;   // weight rows per workgroup, a multiple of SN
layout(constant_id = 5) const uint TK = 32u;    // input elements per step, a multiple of CM_K (8, 16 or 32)
layout(constant_id = 6) const uint SM = 32u;    // sub-tile rows per subgroup, a multiple of CM_M
layout(constant_id = 7) const uint SN = 64u;    // sub-tile columns per subgroup, a multiple of CM_N
layout(constant_id = 8) const uint CM_M = 16u;  // cooperative-matrix shape (M x K) * (K x N)
layout(constant_id = 9) const uint CM_N = 16u;
layout(constant_id = 10) const uint CM_K = 16u;
layout(constant_id = 11) const uint STAGES = 2u; // shared-memory tile buffers: 1 or 2
// Benchmark probe (0 in the model): bit 0 skips the global loads (tiles of
// constants), bit 1 skips the shared-memory matrix loads and the MMA, so
// one run tells which side bounds the time. Results are garbage with
// either bit set. Bit 2 alone: pure MMA throughput (fragments loaded once,
// then only the multiply-adds of every step). Bit 3 alone: the shared-memory
// matrix loads and the MMA of every step, no global loads, no tile stores,
// no barriers (tiles of whatever shared memory holds).
layout(constant_id = 12) const uint PROBE = 0u;
// 1: x is f16 [n][inDim] (to_f16's output, written once per step): tiles
// load it as it is, 16 bytes an octet; 0: float32, converted per tile.
layout(constant_id = 13) const uint AF16 = 0u;
// Steps the global loads run ahead of the MMA: 1, or 2 (two register sets
// of the tiles, tile t + 2 fetched while tile t is multiplied and tile
// t + 1 waits in registers, so loads have two steps to arrive; more
// registers).
layout(constant_id = 14) const uint PREFETCH = 1u;
const bool TILES = (PROBE & 8u) == 0u;  // fetch and store tiles, with barriers

layout(set = 0, binding = 0) readonly buffer Wbuf { uint w[]; };
layout(set = 0, binding = 0) readonly buffer Wbuf2 { uvec2 w2[]; };  // F16 quads: 8-byte loads
layout(set = 0, binding = 0) readonly buffer Wbuf4 { uvec4 w4[]; };  // F16 octets: 16-byte loads
layout(set = 0, binding = 1) readonly buffer Xbuf { vec4 x4[]; };
layout(set = 0, binding = 1) readonly buffer Xbuf8 { uvec4 xh8[]; };  // AF16 octets: 16-byte loads
layout(set = 0, binding = 1) readonly buffer Xbuf16 { uvec2 xh4[]; }; // AF16 quads: 8-byte loads
layout(set = 0, binding = 2) buffer Ybuf { float y[]; };
layout(set = 0, binding = 3) writeonly buffer Pbuf { float part[]; };  // split-K partial sums
layout(set = 0, binding = 4) writeonly buffer Y1buf { float y1[]; };  // columns from split1 on
layout(set = 0, binding = 5) writeonly buffer Y2buf { float y2[]; };  // columns from split2 on

layout(push_constant) uniform Push {
    uint n;        // activation rows
    uint inDim;    // elements per row: a multiple of 4 (of the block size for block types)
    uint outDim;   // weight rows bound
    uint rowBytes; // bytes per weight row
    uint yStride;  // floats per y row
    uint yOff;     // column of y that weight row 0 writes
    uint kSteps;   // TK steps per split of the input (grid z)
    uint splits;   // 1: write y; more: write split z's sums to part[z * pStride + row * pRow + column]
    uint pStride;  // floats per split in part
    uint pRow;     // floats per activation row in part
    uint split1;   // first output column (yOff + weight row) written to y1
    uint split2;   // first output column written to y2
    uint stride1;  // floats per y1 row
    uint stride2;  // floats per y2 row
} pc;

#include "include/weights.glsl"

// Output (row r, column c = yOff + weight row) of value v: to split z's
// partial sums, or by column to y (ADD), y1 or y2 (stacked weights: Q, K
// and V, or gate and up, each to its own buffer).
void storeOut(uint r, uint c, float v) {
    if (pc.splits > 1u) {
        part[gl_WorkGroupID.z * pc.pStride + r * pc.pRow + c] = v;
    } else if (c < pc.split1) {
        uint at = r * pc.yStride + c;
        y[at] = ADD != 0u ? y[at] + v : v;
    } else if (c < pc.split2) {
        y1[r * pc.stride1 + c - pc.split1] = v;
    } else {
        y2[r * pc.stride2 + c - pc.split2] = v;
    }
}

const uint WG = gl_WorkGroupSize.x;
const uint TK8 = TK / 8u;          // octets (8 halves, 16 bytes) per tile row; TK is a multiple of 8
const uint SA = TK8 + 1u;          // uvec4 stride of a tile row (16 bytes of padding against bank conflicts)
const uint MT = SM / CM_M;         // A matrices per sub-tile
const uint NT = SN / CM_N;         // B matrices per sub-tile
const uint KT = TK / CM_K;         // k steps per tile
const uint NSN = TN / SN;
const uint NST = (TM / SM) * NSN;  // sub-tiles
const uint LA = (TM * TK8 + WG - 1u) / WG;  // activation octets per invocation
const uint LB = (TN * TK8 + WG - 1u) / WG;  // weight octets per invocation
const uint CS = CM_M * CM_N;       // floats of output staging per sub-tile
const uint MAX_K_TILES = 32768u;   // bound of the step loop (host-checked)

// Tiles are f16 in 16-byte elements: 16-byte shared stores, and
// cooperative-matrix loads from 16-byte aligned rows (offsets and strides
// in uvec4 units).
shared uvec4 sA[STAGES * TM * SA];
shared uvec4 sB[STAGES * TN * SA];
shared float sC[NST * CS];

// The next step's octets, in registers between the global loads and the
// shared-memory stores: individually named (at most MAXL each; the host
// checks), never arrays that a driver might put in local memory.
const uint MAXL = 8u;
uvec4 stA0, stA1, stA2, stA3, stA4, stA5, stA6, stA7;
uvec4 stB0, stB1, stB2, stB3, stB4, stB5, stB6, stB7;
// The second register set (PREFETCH = 2): tiles of odd steps.
uvec4 stC0, stC1, stC2, stC3, stC4, stC5, stC6, stC7;
uvec4 stD0, stD1, stD2, stD3, stD4, stD5, stD6, stD7;
#define EACH8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

// Eight f32 values as eight packed halves.
uvec4 packOctet(vec4 lo, vec4 hi) {
    return uvec4(packFloat2x16(f16vec2(lo.xy)), packFloat2x16(f16vec2(lo.zw)),
                 packFloat2x16(f16vec2(hi.xy)), packFloat2x16(f16vec2(hi.zw)));
}

// F16 weights go by 16-byte octets when rows allow (uniform).
bool octets() {
    return (pc.rowBytes & 15u) == 0u && (pc.inDim & 7u) == 0u;
}

// Activation octet i of this invocation for the step at input element k0;
// what lies past n or inDim reads as zeros (inDim is a multiple of 4, so
// each quad is wholly inside or outside).
uvec4 fetchA(uint i, uint row0, uint k0) {
    if ((PROBE & 1u) != 0u) {
        return uvec4(0x30003000u * (k0 & 1u));
    }
    uint idx = gl_LocalInvocationIndex + i * WG;
    uint r = idx / TK8;
    uint e = k0 + 8u * (idx % TK8);
    if (AF16 != 0u) {
        // Halves as they are: one 16-byte load when rows are whole
        // octets (e is a multiple of 8), else two 8-byte ones.
        uvec4 q = uvec4(0u);
        if (idx < TM * TK8 && row0 + r < pc.n) {
            uint at = (row0 + r) * pc.inDim + e;   // in halves
            if ((pc.inDim & 7u) == 0u) {
                if (e < pc.inDim) {
                    q = xh8[at / 8u];
                }
            } else {
                if (e < pc.inDim) {
                    q.xy = xh4[at / 4u];
                }
                if (e + 4u < pc.inDim) {
                    q.zw = xh4[at / 4u + 1u];
                }
            }
        }
        return q;
    }
    vec4 lo = vec4(0.0);
    vec4 hi = vec4(0.0);
    if (idx < TM * TK8 && row0 + r < pc.n) {
        uint at = (row0 + r) * (pc.inDim / 4u) + e / 4u;
        if (e < pc.inDim) {
            lo = x4[at];
        }
        if (e + 4u < pc.inDim) {
            hi = x4[at + 1u];
        }
    }
    return packOctet(lo, hi);
}

// Weight octet i of this invocation for the step at input element k0
// (oct: F16 rows by 16-byte loads); past outDim or inDim reads as zeros.
uvec4 fetchB(uint i, uint col0, uint k0, bool oct) {
    if ((PROBE & 1u) != 0u) {
        return uvec4(0x2c002c00u + i);
    }
    uint idx = gl_LocalInvocationIndex + i * WG;
    uint o = idx / TK8;
    uint e = k0 + 8u * (idx % TK8);
    bool row = idx < TN * TK8 && col0 + o < pc.outDim;
    uint rowOff = (col0 + o) * pc.rowBytes;
    if (WTYPE == W_F16 && oct) {
        // One aligned 16-byte load, the halves kept as they are.
        uvec4 q = uvec4(0u);
        if (row && e < pc.inDim) {
            q = w4[rowOff / 16u + e / 8u];
        }
        return q;
    } else if (WTYPE == W_F16) {
        // Rows of a multiple of 4 halves: two aligned 8-byte loads.
        uvec2 lo = uvec2(0u);
        uvec2 hi = uvec2(0u);
        if (row && e < pc.inDim) {
            lo = w2[rowOff / 8u + e / 4u];
        }
        if (row && e + 4u < pc.inDim) {
            hi = w2[rowOff / 8u + e / 4u + 1u];
        }
        return uvec4(lo, hi);
    }
    vec4 lo = vec4(0.0);
    vec4 hi = vec4(0.0);
    if (row && e < pc.inDim) {
        lo = wQuad(rowOff, e);
    }
    if (row && e + 4u < pc.inDim) {
        hi = wQuad(rowOff, e + 4u);
    }
    return packOctet(lo, hi);
}

// The step's tiles at input element k0 into registers: every load of the
// step issued before any is used.
#define FETCH_A(i) if (uint(i) < LA) { stA##i = fetchA(uint(i), row0, k0); }
#define FETCH_B(i) if (uint(i) < LB) { stB##i = fetchB(uint(i), col0, k0, oct); }
void fetchTile(uint row0, uint col0, uint k0) {
    bool oct = octets();
    EACH8(FETCH_A)
    EACH8(FETCH_B)
}
#define FETCH_C(i) if (uint(i) < LA) { stC##i = fetchA(uint(i), row0, k0); }
#define FETCH_D(i) if (uint(i) < LB) { stD##i = fetchB(uint(i), col0, k0, oct); }
void fetchTile1(uint row0, uint col0, uint k0) {   // into the second set
    bool oct = octets();
    EACH8(FETCH_C)
    EACH8(FETCH_D)
}

// The fetched tiles into shared-memory stage stage.
void storeA(uint i, uint stage, uvec4 v) {
    uint idx = gl_LocalInvocationIndex + i * WG;
    if (idx < TM * TK8) {
        sA[stage * TM * SA + (idx / TK8) * SA + idx % TK8] = v;
    }
}
void storeB(uint i, uint stage, uvec4 v) {
    uint idx = gl_LocalInvocationIndex + i * WG;
    if (idx < TN * TK8) {
        sB[stage * TN * SA + (idx / TK8) * SA + idx % TK8] = v;
    }
}
#define STORE_A(i) if (uint(i) < LA) { storeA(uint(i), stage, stA##i); }
#define STORE_B(i) if (uint(i) < LB) { storeB(uint(i), stage, stB##i); }
void storeTile(uint stage) {
    EACH8(STORE_A)
    EACH8(STORE_B)
}
#define STORE_C(i) if (uint(i) < LA) { storeA(uint(i), stage, stC##i); }
#define STORE_D(i) if (uint(i) < LB) { storeB(uint(i), stage, stD##i); }
void storeTile1(uint stage) {   // from the second set
    EACH8(STORE_C)
    EACH8(STORE_D)
}

void subgroupSync() {
    subgroupMemoryBarrierShared();
    subgroupBarrier();
}

// Fragments are individually named variables (at most MAXF x MAXF
// accumulators, MAXF A and B matrices; the host checks SM/CM_M and SN/CM_N),
// never arrays: arrays of cooperative matrices sized by specialization
// constants may be placed in local memory by a driver (spills on every
// MMA). Guards on spec constants vanish at specialization.
#define ACC_T coopmat<float, gl_ScopeSubgroup, CM_M, CM_N, gl_MatrixUseAccumulator>
#define A_T coopmat<float16_t, gl_ScopeSubgroup, CM_M, CM_K, gl_MatrixUseA>
#define B_T coopmat<float16_t, gl_ScopeSubgroup, CM_K, CM_N, gl_MatrixUseB>
#define EACH4(X) X(0) X(1) X(2) X(3)
#define EACH44(X) X(0, 0) X(0, 1) X(0, 2) X(0, 3) X(1, 0) X(1, 1) X(1, 2) X(1, 3) \
                  X(2, 0) X(2, 1) X(2, 2) X(2, 3) X(3, 0) X(3, 1) X(3, 2) X(3, 3)
#define DECL_ACC(i, j) ACC_T acc##i##j = ACC_T(0.0);
#define DECL_A(i) A_T a##i;
#define DECL_B(j) B_T b##j;
#define LOAD_A(i) if (uint(i) < MT) { coopMatLoad(a##i, sA, aBase + uint(i) * CM_M * SA + kk * (CM_K / 8u), SA, gl_CooperativeMatrixLayoutRowMajor); }
#define LOAD_B(j) if (uint(j) < NT) { coopMatLoad(b##j, sB, bBase + uint(j) * CM_N * SA + kk * (CM_K / 8u), SA, gl_CooperativeMatrixLayoutColumnMajor); }
#define MMA(i, j) if (uint(i) < MT && uint(j) < NT) { acc##i##j = coopMatMulAdd(a##i, b##j, acc##i##j); }
#define STORE_ACC(i, j) if (uint(i) < MT && uint(j) < NT) { \
        coopMatStore(acc##i##j, sC, st * CS, CM_N, gl_CooperativeMatrixLayoutRowMajor); \
        writeOut(st, sm, sn, uint(i), uint(j), row0, col0, lane); }
const uint MAXF = 4u;

// Sub-tile st's staged fragment (i, j) (in sC) out to y or part.
void writeOut(uint st, uint sm, uint sn, uint i, uint j, uint row0, uint col0, uint lane) {
    subgroupSync();
    for (uint e = lane; e < CS; e += gl_SubgroupSize) {
        uint r = row0 + sm * SM + i * CM_M + e / CM_N;
        uint o = col0 + sn * SN + j * CM_N + e % CM_N;
        if (r < pc.n && o < pc.outDim) {
            storeOut(r, pc.yOff + o, sC[st * CS + e]);
        }
    }
    subgroupSync();
}

// The MMAs of one step on shared-memory stage stg (inline: the
// accumulators are main's locals).
#define MMA_STEP(stg) \
    if (on && (PROBE & 2u) == 0u) { \
        uint aBase = (stg) * TM * SA + sm * SM * SA; \
        uint bBase = (stg) * TN * SA + sn * SN * SA; \
        [[unroll]] for (uint kk = 0u; kk < KT; kk++) { \
            EACH4(DECL_A) \
            EACH4(DECL_B) \
            EACH4(LOAD_A) \
            EACH4(LOAD_B) \
            EACH44(MMA) \
        } \
    }

// Step t (of parity P, whose tiles are in register set FETCH_P/STORE_P;
// STORE_Q stores the other set) with PREFETCH = 2. STAGES = 2: stage P
// holds tile t; set P is free once tile t is stored, so tile t + 2 is
// fetched into it before the MMAs, and tile t + 1 (set Q, fetched a step
// earlier) goes to the other stage, last read before the previous
// barrier. STAGES = 1: tile t goes from set P to the one stage between
// two barriers, then tile t + 2 is fetched into set P.
#define PREFETCH2_STEP(P, t, FETCH_P, STORE_P, STORE_Q) \
    if (STAGES == 2u) { \
        if ((t) + 2u < kTiles) { \
            FETCH_P(row0, col0, (kFirst + (t) + 2u) * TK); \
        } \
        MMA_STEP(P) \
        if ((t) + 1u < kTiles) { \
            STORE_Q((P) ^ 1u); \
        } \
        barrier(); \
    } else { \
        barrier(); \
        STORE_P(0u); \
        barrier(); \
        if ((t) + 2u < kTiles) { \
            FETCH_P(row0, col0, (kFirst + (t) + 2u) * TK); \
        } \
        MMA_STEP(0u) \
    }

void main() {
    uint row0 = gl_WorkGroupID.x * TM;   // activation rows
    uint col0 = gl_WorkGroupID.y * TN;   // weight rows
    if (row0 >= pc.n || col0 >= pc.outDim) {
        return; // whole workgroup: uniform
    }
    uint sg = gl_SubgroupID;
    uint nsg = gl_NumSubgroups;
    uint lane = gl_SubgroupInvocationID;
    uint passes = (NST + nsg - 1u) / nsg;
    uint allTiles = (pc.inDim + TK - 1u) / TK;
    uint kFirst = min(gl_WorkGroupID.z * pc.kSteps, allTiles);       // this split's steps
    uint kTiles = min(min(pc.kSteps, allTiles - kFirst), MAX_K_TILES);

    for (uint pass = 0u; pass < passes && pass < NST; pass++) {
        uint st = sg + pass * nsg;
        bool on = st < NST;              // subgroup-uniform
        uint sm = on ? st / NSN : 0u;
        uint sn = on ? st % NSN : 0u;
        EACH44(DECL_ACC)
        if ((PROBE & 4u) != 0u) {
            // Pure MMA throughput: fragments loaded once, then only the
            // step loop's multiply-adds (no global or shared traffic, no
            // barriers). Garbage results.
            if (on) {
                uint aBase = sm * SM * SA;
                uint bBase = sn * SN * SA;
                uint kk = 0u;
                EACH4(DECL_A)
                EACH4(DECL_B)
                EACH4(LOAD_A)
                EACH4(LOAD_B)
                for (uint kt = 0u; kt < kTiles * KT; kt++) {
                    EACH44(MMA)
                }
            }
        } else if (PREFETCH == 2u && TILES) {
            // Two steps ahead: register set 0 (fetchTile, storeTile) holds
            // the tiles of even steps, set 1 those of odd steps; the loop
            // makes two steps per iteration so that each names its set.
            fetchTile(row0, col0, kFirst * TK);
            if (kTiles > 1u) {
                fetchTile1(row0, col0, (kFirst + 1u) * TK);
            }
            if (STAGES == 2u) {
                storeTile(0u);
                barrier();
            }
            for (uint kt = 0u; kt < kTiles; kt += 2u) {
                PREFETCH2_STEP(0u, kt, fetchTile, storeTile, storeTile1)
                if (kt + 1u < kTiles) {
                    PREFETCH2_STEP(1u, kt + 1u, fetchTile1, storeTile1, storeTile)
                }
            }
        } else {
            if (TILES) {
                fetchTile(row0, col0, kFirst * TK);
            }
            if (STAGES == 2u && TILES) {
                storeTile(0u);
                barrier();
            }
            for (uint kt = 0u; kt < kTiles; kt++) {
                uint stage = STAGES == 2u ? (kt & 1u) : 0u;
                if (STAGES != 2u && TILES) {
                    barrier();   // the previous step's tiles are consumed
                    storeTile(0u);
                    barrier();
                }
                if (TILES && kt + 1u < kTiles) {
                    fetchTile(row0, col0, (kFirst + kt + 1u) * TK);
                }
                if (on && (PROBE & 2u) == 0u) {
                    uint aBase = stage * TM * SA + sm * SM * SA;
                    uint bBase = stage * TN * SA + sn * SN * SA;
                    [[unroll]] for (uint kk = 0u; kk < KT; kk++) {
                        EACH4(DECL_A)
                        EACH4(DECL_B)
                        EACH4(LOAD_A)
                        EACH4(LOAD_B)
                        EACH44(MMA)
                    }
                }
                if (STAGES == 2u && TILES) {
                    // The other stage was last read before the previous barrier.
                    if (kt + 1u < kTiles) {
                        storeTile(stage ^ 1u);
                    }
                    barrier();
                }
            }
        }
        if (on) {
            EACH44(STORE_ACC)
        }
    }
}

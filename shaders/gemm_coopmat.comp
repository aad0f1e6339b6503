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
// float32 [n][inDim]; W is GGUF rows in their file encoding (any type of
// include/weights.glsl), dequantized while a tile is loaded. Operands are
// rounded to f16, products accumulate in f32.
//
// A workgroup owns a TM x TN tile of y (TM activation rows, TN weight
// rows) and walks the input dimension in steps of TK:
//   1. the tile's TM x TK activations and TN x TK weights, fetched into
//      registers one step ahead (converted to f16 there), are stored in
//      shared memory;
//   2. each subgroup multiplies its SM x SN sub-tile: SM/CM_M A matrices
//      (rows of x) times SN/CM_N B matrices (W^T, read column-major from
//      the weight rows) into f32 accumulators.
// With STAGES = 2 the tiles alternate between two shared buffers: the next
// step's tiles are stored while others may still read the current one, one
// barrier per step (STAGES = 1: two barriers, half the shared memory).
// The host sizes the workgroup as (TM/SM)*(TN/SN) subgroups; should the
// device run fewer (smaller subgroups), extra passes over the input cover
// the remaining sub-tiles, larger ones leave subgroups idle. Every output
// is one accumulator element written once (no atomics: reruns are
// bit-identical). The result goes out through shared memory, so ragged
// edges and ADD need no special tiles.
//
// ADD = 1 adds the product to y (the residual stream) instead of storing it.
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
// either bit set.
layout(constant_id = 12) const uint PROBE = 0u;

layout(set = 0, binding = 0) readonly buffer Wbuf { uint w[]; };
layout(set = 0, binding = 0) readonly buffer Wbuf2 { uvec2 w2[]; };  // F16 quads: one 8-byte load each
layout(set = 0, binding = 0) readonly buffer Wbuf4 { uvec4 w4[]; };  // F16 octets: one 16-byte load each
layout(set = 0, binding = 1) readonly buffer Xbuf { vec4 x4[]; };
layout(set = 0, binding = 2) buffer Ybuf { float y[]; };
layout(set = 0, binding = 3) writeonly buffer Pbuf { float part[]; };  // split-K partial sums

layout(push_constant) uniform Push {
    uint n;        // activation rows
    uint inDim;    // elements per row: a multiple of 4 (of the block size for block types)
    uint outDim;   // weight rows bound
    uint rowBytes; // bytes per weight row
    uint yStride;  // floats per y row
    uint yOff;     // column of y that weight row 0 writes
    uint kSteps;   // TK steps per split of the input (grid z)
    uint splits;   // 1: write y; more: write split z's sums to part[z * pStride + (y index)]
    uint pStride;  // floats per split in part
} pc;

#include "include/weights.glsl"

const uint WG = gl_WorkGroupSize.x;
const uint TK4 = TK / 4u;
const uint SA = TK4 + 2u;          // f16vec4 stride of a tile row (16 bytes of padding against bank conflicts)
const uint MT = SM / CM_M;         // A matrices per sub-tile
const uint NT = SN / CM_N;         // B matrices per sub-tile
const uint KT = TK / CM_K;         // k steps per tile
const uint NSN = TN / SN;
const uint NST = (TM / SM) * NSN;  // sub-tiles
const uint LA = (TM * TK4 + WG - 1u) / WG;  // activation quads per invocation
const uint LB4 = (TN * TK4 + WG - 1u) / WG;  // weight quads per invocation
const uint TK8 = TK / 8u;                    // F16 weight octets per tile row (TK is a multiple of 8)
const uint LB8 = (TN * TK8 + WG - 1u) / WG;  // weight octets per invocation
const uint LB = LB4 > 2u * LB8 ? LB4 : 2u * LB8;          // weight quads held per invocation
const uint CS = CM_M * CM_N;       // floats of output staging per sub-tile
const uint MAX_K_TILES = 32768u;   // bound of the step loop (host-checked)

shared f16vec4 sA[STAGES * TM * SA];
shared f16vec4 sB[STAGES * TN * SA];
shared float sC[NST * CS];

f16vec4 stA[LA];
f16vec4 stB[LB];

// F16 weights go by 16-byte octets when rows allow (uniform).
bool octets() {
    return (pc.rowBytes & 15u) == 0u && (pc.inDim & 7u) == 0u;
}

// The step's tiles at input element k0 into registers; what lies past n,
// outDim or inDim reads as zeros.
void fetchTile(uint row0, uint col0, uint k0) {
    if ((PROBE & 1u) != 0u) {
        [[unroll]] for (uint i = 0u; i < LA; i++) {
            stA[i] = f16vec4(float16_t(float(k0 & 7u) * 0.125));
        }
        [[unroll]] for (uint i = 0u; i < LB; i++) {
            stB[i] = f16vec4(float16_t(float(i) * 0.125));
        }
        return;
    }
    uint in4 = pc.inDim / 4u;
    [[unroll]] for (uint i = 0u; i < LA; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        uint r = idx / TK4;
        uint e = k0 + 4u * (idx % TK4);
        vec4 v = vec4(0.0);
        if (idx < TM * TK4 && row0 + r < pc.n && e < pc.inDim) {
            v = x4[(row0 + r) * in4 + e / 4u];
        }
        stA[i] = f16vec4(v);
    }
    if (WTYPE == W_F16 && octets()) {
        // Rows of a multiple of 8 halves (16 bytes): one aligned 16-byte
        // load per octet, its halves taken as they are.
        [[unroll]] for (uint i = 0u; i < LB8; i++) {
            uint idx = gl_LocalInvocationIndex + i * WG;
            uint o = idx / TK8;
            uint e = k0 + 8u * (idx % TK8);
            uvec4 q = uvec4(0u);
            if (idx < TN * TK8 && col0 + o < pc.outDim && e < pc.inDim) {
                q = w4[((col0 + o) * pc.rowBytes) / 16u + e / 8u];
            }
            stB[2u * i] = f16vec4(unpackFloat2x16(q.x), unpackFloat2x16(q.y));
            stB[2u * i + 1u] = f16vec4(unpackFloat2x16(q.z), unpackFloat2x16(q.w));
        }
        return;
    }
    [[unroll]] for (uint i = 0u; i < LB4; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        uint o = idx / TK4;
        uint e = k0 + 4u * (idx % TK4);
        bool inside = idx < TN * TK4 && col0 + o < pc.outDim && e < pc.inDim;
        if (WTYPE == W_F16) {
            // Rows of a multiple of 4 halves are 8-byte aligned: the quad
            // is one aligned load, its halves taken as they are.
            uvec2 q = uvec2(0u);
            if (inside) {
                q = w2[((col0 + o) * pc.rowBytes) / 8u + e / 4u];
            }
            stB[i] = f16vec4(unpackFloat2x16(q.x), unpackFloat2x16(q.y));
        } else {
            vec4 v = vec4(0.0);
            if (inside) {
                v = wQuad((col0 + o) * pc.rowBytes, e);
            }
            stB[i] = f16vec4(v);
        }
    }
}

// The fetched tiles into shared-memory stage stage.
void storeTile(uint stage) {
    [[unroll]] for (uint i = 0u; i < LA; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        if (idx < TM * TK4) {
            sA[stage * TM * SA + (idx / TK4) * SA + idx % TK4] = stA[i];
        }
    }
    if (WTYPE == W_F16 && (PROBE & 1u) == 0u && octets()) {
        [[unroll]] for (uint i = 0u; i < LB8; i++) {
            uint idx = gl_LocalInvocationIndex + i * WG;
            if (idx < TN * TK8) {
                uint at = stage * TN * SA + (idx / TK8) * SA + 2u * (idx % TK8);
                sB[at] = stB[2u * i];
                sB[at + 1u] = stB[2u * i + 1u];
            }
        }
        return;
    }
    [[unroll]] for (uint i = 0u; i < LB4; i++) {
        uint idx = gl_LocalInvocationIndex + i * WG;
        if (idx < TN * TK4) {
            sB[stage * TN * SA + (idx / TK4) * SA + idx % TK4] = stB[i];
        }
    }
}

void subgroupSync() {
    subgroupMemoryBarrierShared();
    subgroupBarrier();
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
        coopmat<float, gl_ScopeSubgroup, CM_M, CM_N, gl_MatrixUseAccumulator> acc[MT * NT];
        [[unroll]] for (uint i = 0u; i < MT * NT; i++) {
            acc[i] = coopmat<float, gl_ScopeSubgroup, CM_M, CM_N, gl_MatrixUseAccumulator>(0.0);
        }
        fetchTile(row0, col0, kFirst * TK);
        if (STAGES == 2u) {
            storeTile(0u);
            barrier();
        }
        for (uint kt = 0u; kt < kTiles; kt++) {
            uint stage = STAGES == 2u ? (kt & 1u) : 0u;
            if (STAGES != 2u) {
                barrier();   // the previous step's tiles are consumed
                storeTile(0u);
                barrier();
            }
            if (kt + 1u < kTiles) {
                fetchTile(row0, col0, (kFirst + kt + 1u) * TK);
            }
            if (on && (PROBE & 2u) == 0u) {
                uint aBase = stage * TM * SA + sm * SM * SA;
                uint bBase = stage * TN * SA + sn * SN * SA;
                [[unroll]] for (uint kk = 0u; kk < KT; kk++) {
                    coopmat<float16_t, gl_ScopeSubgroup, CM_M, CM_K, gl_MatrixUseA> a[MT];
                    [[unroll]] for (uint i = 0u; i < MT; i++) {
                        coopMatLoad(a[i], sA, aBase + i * CM_M * SA + kk * (CM_K / 4u), SA,
                                    gl_CooperativeMatrixLayoutRowMajor);
                    }
                    [[unroll]] for (uint j = 0u; j < NT; j++) {
                        coopmat<float16_t, gl_ScopeSubgroup, CM_K, CM_N, gl_MatrixUseB> b;
                        coopMatLoad(b, sB, bBase + j * CM_N * SA + kk * (CM_K / 4u), SA,
                                    gl_CooperativeMatrixLayoutColumnMajor);
                        [[unroll]] for (uint i = 0u; i < MT; i++) {
                            acc[i * NT + j] = coopMatMulAdd(a[i], b, acc[i * NT + j]);
                        }
                    }
                }
            }
            if (STAGES == 2u) {
                // The other stage was last read before the previous barrier.
                if (kt + 1u < kTiles) {
                    storeTile(stage ^ 1u);
                }
                barrier();
            }
        }
        if (on) {
            [[unroll]] for (uint i = 0u; i < MT; i++) {
                [[unroll]] for (uint j = 0u; j < NT; j++) {
                    coopMatStore(acc[i * NT + j], sC, st * CS, CM_N, gl_CooperativeMatrixLayoutRowMajor);
                    subgroupSync();
                    for (uint e = lane; e < CS; e += gl_SubgroupSize) {
                        uint r = row0 + sm * SM + i * CM_M + e / CM_N;
                        uint o = col0 + sn * SN + j * CM_N + e % CM_N;
                        if (r < pc.n && o < pc.outDim) {
                            uint at = r * pc.yStride + pc.yOff + o;
                            float v = sC[st * CS + e];
                            if (pc.splits > 1u) {
                                part[gl_WorkGroupID.z * pc.pStride + at] = v;
                            } else {
                                y[at] = ADD != 0u ? y[at] + v : v;
                            }
                        }
                    }
                    subgroupSync();
                }
            }
        }
    }
}

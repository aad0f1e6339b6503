#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
// y[r][o] (+)= sum_i x[r][i] * W[o][i]: the "scalar" variant of gemm, an
// fp32 GEMM for any device (gemm_coopmat.comp is the tensor-core variant;
// same bindings, push block and specialization constants). x is float32
// [n][inDim] (f16 with AF16 = 1, widened to fp32 as tiles load); W is GGUF rows in their file encoding (any type of
// include/weights.glsl), dequantized while a tile is loaded.
//
// A workgroup owns a TM x TN tile of y (TM activation rows, TN weight
// rows) and walks the input dimension in steps of TK: it stores the step's
// activations and dequantized weights in shared memory, k-major, and each
// invocation accumulates an SM x SN register tile (rows ty + r*TM/SM,
// columns tx + c*TN/SN: neighbouring invocations read neighbouring shared
// words and write neighbouring outputs). The workgroup is
// (TM/SM)*(TN/SN) invocations. Each output is summed by one invocation in
// input order (no atomics: reruns are bit-identical). CM_M, CM_N, CM_K and
// STAGES belong to the coopmat variant and are unused here.
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
layout(constant_id = 3) const uint TM = 32u;    // activation rows per workgroup, a multiple of SM
layout(constant_id = 4) const uint TN = 64u;    // weight rows per workgroup, a multiple of SN
layout(constant_id = 5) const uint TK = 32u;    // input elements per step, a multiple of 4
layout(constant_id = 6) const uint SM = 4u;     // rows per invocation
layout(constant_id = 7) const uint SN = 4u;     // columns per invocation
layout(constant_id = 8) const uint CM_M = 16u;  // unused (coopmat variant)
layout(constant_id = 9) const uint CM_N = 16u;
layout(constant_id = 10) const uint CM_K = 16u;
layout(constant_id = 11) const uint STAGES = 1u; // unused (coopmat variant)
layout(constant_id = 12) const uint PROBE = 0u;  // unused (coopmat variant's benchmark probe)
layout(constant_id = 13) const uint AF16 = 0u;   // 1: x is f16 [n][inDim] (to_f16's output), 0: float32
layout(constant_id = 14) const uint PREFETCH = 1u; // unused (coopmat variant)

layout(set = 0, binding = 0) readonly buffer Wbuf { uint w[]; };
layout(set = 0, binding = 1) readonly buffer Xbuf { vec4 x4[]; };
layout(set = 0, binding = 1) readonly buffer Xbuf16 { uvec2 xh4[]; };  // AF16: quads of halves
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
const uint TK4 = TK / 4u;
const uint NTY = TM / SM;          // invocations along rows
const uint NTX = TN / SN;          // invocations along columns
const uint XS = TM + 1u;           // float stride of a k row of sX (odd: transposed stores spread over banks)
const uint WS = TN + 1u;
const uint MAX_K_TILES = 32768u;   // bound of the step loop (host-checked)

shared float sX[TK * XS];          // [k][row]
shared float sW[TK * WS];          // [k][weight row]

void main() {
    uint row0 = gl_WorkGroupID.x * TM;
    uint col0 = gl_WorkGroupID.y * TN;
    if (row0 >= pc.n || col0 >= pc.outDim) {
        return; // whole workgroup: uniform
    }
    uint tid = gl_LocalInvocationIndex;
    uint tx = tid % NTX;
    uint ty = tid / NTX;
    uint in4 = pc.inDim / 4u;
    uint allTiles = (pc.inDim + TK - 1u) / TK;
    uint kFirst = min(gl_WorkGroupID.z * pc.kSteps, allTiles);       // this split's steps
    uint kTiles = min(min(pc.kSteps, allTiles - kFirst), MAX_K_TILES);

    float acc[SM][SN];
    [[unroll]] for (uint r = 0u; r < SM; r++) {
        [[unroll]] for (uint c = 0u; c < SN; c++) {
            acc[r][c] = 0.0;
        }
    }
    for (uint kt = 0u; kt < kTiles; kt++) {
        uint k0 = (kFirst + kt) * TK;
        for (uint idx = tid; idx < TM * TK4; idx += WG) {
            uint r = idx / TK4;
            uint q = idx % TK4;
            uint e = k0 + 4u * q;
            vec4 v = vec4(0.0);
            if (row0 + r < pc.n && e < pc.inDim) {
                uint at = (row0 + r) * in4 + e / 4u;
                if (AF16 != 0u) {
                    uvec2 q = xh4[at];
                    v = vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y));
                } else {
                    v = x4[at];
                }
            }
            [[unroll]] for (uint j = 0u; j < 4u; j++) {
                sX[(4u * q + j) * XS + r] = v[j];
            }
        }
        for (uint idx = tid; idx < TN * TK4; idx += WG) {
            uint o = idx / TK4;
            uint q = idx % TK4;
            uint e = k0 + 4u * q;
            vec4 v = vec4(0.0);
            if (col0 + o < pc.outDim && e < pc.inDim) {
                v = wQuad((col0 + o) * pc.rowBytes, e);
            }
            [[unroll]] for (uint j = 0u; j < 4u; j++) {
                sW[(4u * q + j) * WS + o] = v[j];
            }
        }
        barrier();
        if (ty < NTY) {
            for (uint k = 0u; k < TK; k++) {
                float a[SM];
                float b[SN];
                [[unroll]] for (uint r = 0u; r < SM; r++) {
                    a[r] = sX[k * XS + ty + r * NTY];
                }
                [[unroll]] for (uint c = 0u; c < SN; c++) {
                    b[c] = sW[k * WS + tx + c * NTX];
                }
                [[unroll]] for (uint r = 0u; r < SM; r++) {
                    [[unroll]] for (uint c = 0u; c < SN; c++) {
                        acc[r][c] = fma(a[r], b[c], acc[r][c]);
                    }
                }
            }
        }
        barrier();   // the tiles are consumed before the next step overwrites them
    }
    if (ty >= NTY) {
        return;
    }
    [[unroll]] for (uint r = 0u; r < SM; r++) {
        uint row = row0 + ty + r * NTY;
        [[unroll]] for (uint c = 0u; c < SN; c++) {
            uint o = col0 + tx + c * NTX;
            if (row < pc.n && o < pc.outDim) {
                storeOut(row, pc.yOff + o, acc[r][c]);
            }
        }
    }
}

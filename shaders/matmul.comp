#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
// y[c][o] (+)= sum_i x[c][i] * W[o][i]: a batch of activation rows x times
// the transpose of a weight matrix stored as GGUF rows W[out][in] in their
// file encoding (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K: see include/weights.glsl),
// dequantized here.
//
// A workgroup owns ROWS consecutive output rows. Its invocations split the
// input dimension into units (a 32-element block for block types, a quad of
// 4 elements for float types), dequantize each unit of their ROWS weight
// rows once and apply it to NC activation rows (columns of the product) at a
// time, so a decoding step with at most NC tokens reads every weight once.
// Larger batches make up to `passes` passes of NC columns over the same
// weights (now in cache); the host spreads more columns over grid y. The
// ROWS x NC partial sums are reduced through shared memory in a fixed order
// (no subgroup operations, deterministic).
//
// ADD = 1 adds the product to y (the residual stream) instead of storing it.

layout(local_size_x_id = 0) in;                   // a power of two
layout(constant_id = 1) const uint WTYPE = 0u;    // W_* of include/weights.glsl
layout(constant_id = 2) const uint ROWS = 4u;     // output rows per workgroup
layout(constant_id = 3) const uint NC = 4u;       // activation rows per pass
layout(constant_id = 4) const uint ADD = 0u;

layout(set = 0, binding = 0) readonly buffer Wbuf { uint w[]; };
layout(set = 0, binding = 1) readonly buffer Xbuf { vec4 x4[]; };
layout(set = 0, binding = 2) buffer Ybuf { float y[]; };

layout(push_constant) uniform Push {
    uint n;        // activation rows
    uint inDim;    // elements per row: a multiple of 4, of 32 for block types
    uint outDim;   // weight rows bound
    uint rowBytes; // bytes per weight row
    uint yStride;  // floats per y row
    uint yOff;     // column of y that weight row 0 writes
    uint gridX;    // workgroups along x; row group = x + z * gridX
    uint passes;   // passes of NC columns per workgroup (at most MAX_PASSES)
} pc;

#include "include/weights.glsl"

const uint WG = gl_WorkGroupSize.x;
const uint QUADS = (W_BLOCKS || W_KQUANT) ? 8u : 1u; // quads per unit
const uint UNIT = 4u * QUADS;            // elements per unit
const uint MAX_PASSES = 64u;
const uint MAX_UNIT_STEPS = 4096u;       // bound of the unit loop (host-checked)

const uint RS = WG + 1u; // row stride of red: padded so that the summing invocations hit distinct banks
shared float red[ROWS * NC * RS];

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint group = gl_WorkGroupID.x + gl_WorkGroupID.z * pc.gridX;
    uint row0 = group * ROWS;
    if (row0 >= pc.outDim) {
        return; // whole workgroup: uniform
    }
    uint units = pc.inDim / UNIT;
    uint in4 = pc.inDim / 4u;
    uint rowOff[ROWS];
    [[unroll]] for (uint r = 0u; r < ROWS; r++) {
        rowOff[r] = min(row0 + r, pc.outDim - 1u) * pc.rowBytes;
    }
    uint colBase = gl_WorkGroupID.y * pc.passes * NC;
    for (uint p = 0u; p < min(pc.passes, MAX_PASSES); p++) {
        uint col0 = colBase + p * NC;
        if (col0 >= pc.n) {
            break; // uniform
        }
        uint xrow[NC];
        [[unroll]] for (uint c = 0u; c < NC; c++) {
            xrow[c] = min(col0 + c, pc.n - 1u) * in4;
        }
        float acc[ROWS][NC];
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            [[unroll]] for (uint c = 0u; c < NC; c++) {
                acc[r][c] = 0.0;
            }
        }
        uint u = tid;
        for (uint s = 0u; s < MAX_UNIT_STEPS && u < units; s++, u += WG) {
            vec4 wq[ROWS][QUADS];
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                if (W_KQUANT) {
                    [[unroll]] for (uint q = 0u; q < QUADS; q++) {
                        wq[r][q] = wQuad(rowOff[r], UNIT * u + 4u * q);
                    }
                } else if (W_BLOCKS) {
                    float d = wBlockScale(rowOff[r], u);
                    [[unroll]] for (uint q = 0u; q < QUADS; q++) {
                        wq[r][q] = wBlockQuad(rowOff[r], u, q, d);
                    }
                } else {
                    wq[r][0] = wFloatQuad(rowOff[r], 4u * u);
                }
            }
            [[unroll]] for (uint c = 0u; c < NC; c++) {
                [[unroll]] for (uint q = 0u; q < QUADS; q++) {
                    vec4 xv = x4[xrow[c] + u * QUADS + q];
                    [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                        acc[r][c] += dot(wq[r][q], xv);
                    }
                }
            }
        }
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            [[unroll]] for (uint c = 0u; c < NC; c++) {
                red[(r * NC + c) * RS + tid] = acc[r][c];
            }
        }
        barrier();
        // One invocation per (row, column) sums the WG partial sums in a
        // fixed order: two barriers per pass (barriers are costly on CPU
        // devices, where a tree reduction's log2(WG) of them dominated).
        for (uint k = tid; k < ROWS * NC; k += WG) {
            uint r = k / NC;
            uint c = k - r * NC;
            if (row0 + r < pc.outDim && col0 + c < pc.n) {
                float v = 0.0;
                for (uint j = 0u; j < WG; j++) {
                    v += red[k * RS + j];
                }
                uint i = (col0 + c) * pc.yStride + pc.yOff + row0 + r;
                y[i] = ADD != 0u ? y[i] + v : v;
            }
        }
        barrier(); // red is reused by the next pass
    }
}

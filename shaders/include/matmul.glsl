// Body of matmul.comp and matmul_rope.comp (which defines ROPE_KV): the
// including file sets #version 450 and enables GL_GOOGLE_include_directive
// and GL_EXT_control_flow_attributes.
//
// y[c][o] (+)= sum_i x[c][i] * W[o][i]: a batch of activation rows x times
// the transpose of a weight matrix stored as rows W[out][in] in their GGUF
// encoding or a grouped layout of it (see include/weights.glsl),
// dequantized here.
//
// Built for decoding, where the weights are read once per step and memory
// bandwidth is the limit: a workgroup owns ROWS consecutive output rows, and
// its invocations split the input dimension into chunks of 16 bytes of
// quants (one aligned 16-byte load per row; 48 bytes for Q6_K), consecutive
// invocations reading consecutive chunks. Each chunk of the ROWS rows is
// loaded once, dequantized and applied to NC activation rows (columns of
// the product) at a time, so a step with at most NC tokens reads every
// weight once. Per-block scale arithmetic is factored out of the inner
// products (Q4_K: d*sc*sum(q*x) - dmin*m*sum(x)), with sum(x) shared by the
// ROWS rows. Larger batches make up to `passes` passes of NC columns over
// the same weights (now in cache); the host spreads more columns over grid
// y. The ROWS x NC partial sums of the invocations are reduced through
// shared memory in a fixed order (no subgroup operations: the result does
// not depend on the subgroup size, and reruns are bit-identical).
//
// Rows whose encoding does not allow aligned 16-byte chunks (GGUF Q8_0,
// Q4_0 and Q6_K blocks, float rows of a length not a multiple of 16 bytes)
// take a slower path that dequantizes quad by quad (wQuad).
//
// Fused epilogues and prologue (specialization constants):
//   NORM = 1: each activation row is RMS-normalised and scaled by the norm
//     weight g first, x' = x / sqrt(mean(x^2) + eps) * g: the products use
//     x*g, and each workgroup sums x^2 of the rows it reads anyway, so the
//     1/rms factor is applied to the output at the end (no separate norm
//     pass over memory);
//   GLU = 1: the weight is gate rows [0, split1) stacked on as many up
//     rows, in one part; a workgroup takes ROWS/2 gate rows and the same
//     up rows, and output i is silu(gate_i) * up_i (SwiGLU; ROWS even);
//   ADD = 1 adds the product to y (the residual stream) instead of storing;
//   split outputs: weight rows below split1 go to y (row stride yStride),
//     rows in [split1, split2) to y1 (stride1), the rest to y2 (stride2),
//     so that one dispatch computes Q, K and V from concatenated weights.
//
// ROPE_KV (matmul_rope.comp; a decoding step's stacked Q/K/V weight, one
// part, NORM fused or not, no ADD or GLU): the epilogue applies RoPE and
// stores K and V into the KV pool, what rope_kv.comp (kvpool.WriteRoPE)
// does after a plain matmul, in the same float operations (bit-identical):
// one invocation per pair of rows (2j, 2j+1), RoPE's adjacent pairs (ROWS,
// the splits and headDim are even: host-checked, so both rows of a pair are
// in one workgroup and one head); Q rows are rotated into y, K rows rotated
// and V rows as they are written to the token's pool slot, row
// slots[t] * stride1 + (row - split1) of PoolK (V: stride2, split2, PoolV),
// as fp16 when KV_F16. y1 and y2 are not written.

layout(local_size_x_id = 0) in;                   // WG invocations
layout(constant_id = 1) const uint WTYPE = 0u;    // W_* of include/weights.glsl
layout(constant_id = 2) const uint ROWS = 4u;     // output rows per workgroup
layout(constant_id = 3) const uint NC = 4u;       // activation rows per pass
layout(constant_id = 4) const uint ADD = 0u;
layout(constant_id = 5) const uint NORM = 0u;
layout(constant_id = 6) const uint GLU = 0u;
layout(constant_id = 7) const uint UNROLL = 1u;   // aligned chunks per loop iteration (1..8)
layout(constant_id = 8) const uint QCONV = 1u;    // quants to floats: 1 by position (pos*), 0 byte by byte (bytes4)
#ifdef ROPE_KV
layout(constant_id = 9) const uint KV_F16 = 0u;   // the pool holds fp16 (else float32)
#endif

layout(set = 0, binding = 0) readonly buffer Wbuf { uvec4 w4[]; };
layout(set = 0, binding = 1) readonly buffer Xbuf { vec4 x4[]; };
layout(set = 0, binding = 2) buffer Ybuf { float y[]; };
layout(set = 0, binding = 3) writeonly buffer Y1buf { float y1[]; };
layout(set = 0, binding = 4) writeonly buffer Y2buf { float y2[]; };
layout(set = 0, binding = 5) readonly buffer Gbuf { vec4 g4[]; };
#ifdef ROPE_KV
layout(set = 0, binding = 6) readonly buffer Pos { int pos[]; };       // per activation row (token)
layout(set = 0, binding = 7) readonly buffer Freq { float invFreq[]; }; // per rotated pair
layout(set = 0, binding = 8) readonly buffer Slots { uint slots[]; };  // pool slot per token
// The pool as 32-bit words: [slot][kvHeads][headDim], fp16 two per word.
layout(set = 0, binding = 9) writeonly buffer PoolK { uint poolK[]; };
layout(set = 0, binding = 10) writeonly buffer PoolV { uint poolV[]; };
#endif

layout(push_constant) uniform Push {
    uint n;        // activation rows
    uint inDim;    // elements per row: a multiple of 4, of 32 for block types, of 256 for K-quants
    uint outDim;   // weight rows bound
    uint rowBytes; // bytes per weight row
    uint yStride;  // floats per y row
    uint yOff;     // index of weight row 0 in the whole matrix (the part's first row)
    uint gridX;    // workgroups along x; row group = x + z * gridX
    uint passes;   // passes of NC columns per workgroup (at most MAX_PASSES)
    float eps;     // NORM: added to mean(x^2)
    uint split1;   // first weight row written to y1
    uint split2;   // first weight row written to y2
    uint stride1;  // floats per y1 row
    uint stride2;  // floats per y2 row
#ifdef ROPE_KV
    uint headDim;  // even
    uint ropeDims; // rotated dims per head: even, at most headDim
#endif
} pc;

#define W_VEC4
#include "include/weights.glsl"
#ifdef ROPE_KV
#include "include/rope.glsl"
#endif

const uint WG = gl_WorkGroupSize.x;
const uint MAX_PASSES = 64u;
const uint MAX_STEPS = 4096u; // bound of the chunk and unit loops (host-checked)

// Aligned chunks: elements per chunk.
const bool FLOATS = WTYPE <= W_BF16;
const uint CHUNK = WTYPE == W_F32 ? 4u : (WTYPE == W_F16 || WTYPE == W_BF16) ? 8u
                 : WTYPE == W_Q8_0G ? 16u : WTYPE == W_Q6_KG ? 64u : 32u;
const bool HAS_CHUNKS = FLOATS || W_GROUPED || WTYPE == W_Q4_K || WTYPE == W_Q5_K;
// Quad path: elements per unit.
const uint UNIT = (W_BLOCKS || W_KQUANT) ? 32u : 4u;

const uint RS = WG + 1u; // row stride of red: padded so that the summing invocations hit distinct banks
const uint SLOTS = (ROWS + NORM) * NC; // partial sums per invocation: products, then sum(x^2) per column
shared float red[SLOTS * RS];

float acc[ROWS][NC];
float ss[NC];
uint rowOff[ROWS];
uint xrow[NC];

// Elements e..e+3 of activation row c (times g with NORM); every element of
// a column is read exactly once per pass, so sum(x^2) is taken here.
vec4 xq(uint c, uint e) {
    vec4 v = x4[xrow[c] + (e >> 2u)];
    if (NORM != 0u) {
        ss[c] += dot(v, v);
        v *= g4[e >> 2u];
    }
    return v;
}

float silu(float v) { return v / (1.0 + exp(-v)); }

// Byte values of a word minus off, as floats. A byte b is turned into a
// float by setting it as the mantissa of 2^23 (2^23 + b exactly) and
// subtracting 2^23: an OR and an add instead of an int-to-float conversion,
// which many GPUs run at a fraction of the fp32 rate.
vec4 bytes4(uint v, float off) {
    uvec4 b = uvec4(v & 0xffu, (v >> 8u) & 0xffu, (v >> 16u) & 0xffu, v >> 24u);
    return uintBitsToFloat(b | 0x4b000000u) - (8388608.0 + off);
}

// Signed byte values of a word as floats (b + 128 is unsigned).
vec4 sbytes4(uint v) { return bytes4(v ^ 0x80808080u, 128.0); }

float sumq(vec4 v) { return (v.x + v.y) + (v.z + v.w); }

// Quants to floats by position (QCONV = 1): the quants of a word are not
// moved to bit 0 one by one (a shift and a mask each) but masked where they
// lie, in bits 0-15 of the word or of the word shifted down by 16 (one shift
// per word), under the exponent of 2^23 (the mask and the OR are one
// three-input logic instruction); subtracting 2^23 (and the quant offset)
// leaves q * 2^p, exactly, with p the quant's bit position in its 16-bit
// half. The activations are scaled by 2^-p once per chunk and column (the
// POS_* vectors), shared by the ROWS rows: each product q*2^p * x*2^-p equals
// q*x exactly, so the results are bit-identical to QCONV = 0 (barring
// activations below 2^-100, which the scaling would flush to zero).
const vec4 POS_B = vec4(1.0, 1.0 / 256.0, 1.0, 1.0 / 256.0);      // bytes: p = 0, 8
const vec4 POS_HI = vec4(1.0 / 16.0, 1.0 / 4096.0, 1.0 / 16.0, 1.0 / 4096.0); // high nibbles: p = 4, 12

// Unsigned bytes of v minus off, times 2^p (p = 0, 8, 0, 8).
vec4 posBytes(uint v, float off) {
    uint u = v >> 16u;
    uvec4 f = (uvec4(v, v, u, u) & uvec4(0xffu, 0xff00u, 0xffu, 0xff00u)) | 0x4b000000u;
    return uintBitsToFloat(f) - (8388608.0 + off * vec4(1.0, 256.0, 1.0, 256.0));
}

// Signed bytes of v times 2^p: XOR with 0x80 where each byte lies makes it
// b + 128 (the exponent bits are set by the same XOR).
vec4 posSbytes(uint v) {
    uint u = v >> 16u;
    uvec4 f = (uvec4(v, v, u, u) & uvec4(0xffu, 0xff00u, 0xffu, 0xff00u)) ^
              uvec4(0x4b000080u, 0x4b008000u, 0x4b000080u, 0x4b008000u);
    return uintBitsToFloat(f) - vec4(8388736.0, 8421376.0, 8388736.0, 8421376.0);
}

// Scales (x, y) and mins (z, w) of sub-blocks 2g and 2g+1 of a Q4_K
// super-block whose 16-byte header is hdr (d and dmin, 12 bytes of packed
// scales: see wScaleMinK4), as floats: the two sub-blocks' fields lie in
// one 16-bit half of each scale word (one shift per word, both sub-blocks
// at once, no branch on g), and small integers become floats under the
// exponent of 2^23 (an integer-to-float conversion runs at a quarter of
// the rate on many GPUs). The values equal wScaleMinK4's.
vec4 q4kScaleMins(uint g, uvec4 hdr) {
    uint sh = 16u * (g & 1u);
    uint a = hdr.y >> sh; // bytes 2g, 2g+1 (g < 2) or 2g-4, 2g-3 of the scale bytes 0..3
    uint b = hdr.z >> sh; // bytes 4..7
    uint c = hdr.w >> sh; // bytes 8..11
    uvec4 v = g < 2u ? uvec4(a, a >> 8u, b, b >> 8u) & 63u
                     : (uvec4(c, c >> 8u, c >> 4u, c >> 12u) & 15u) | (uvec4(a >> 2u, a >> 10u, b >> 2u, b >> 10u) & 0x30u);
    return uintBitsToFloat(v | 0x4b000000u) - 8388608.0;
}

// Low nibbles of v minus off times 2^p (p = 0, 8, 0, 8) and high nibbles
// minus off times 2^p (p = 4, 12, 4, 12).
void posNibbles(uint v, float off, out vec4 lo, out vec4 hi) {
    uint u = v >> 16u;
    uvec4 a = uvec4(v, v, u, u);
    lo = uintBitsToFloat((a & uvec4(0x0fu, 0x0f00u, 0x0fu, 0x0f00u)) | 0x4b000000u) -
         (8388608.0 + off * vec4(1.0, 256.0, 1.0, 256.0));
    hi = uintBitsToFloat((a & uvec4(0xf0u, 0xf000u, 0xf0u, 0xf000u)) | 0x4b000000u) -
         (8388608.0 + off * vec4(16.0, 4096.0, 16.0, 4096.0));
}

// One aligned chunk ch of every row.
void chunkStep(uint ch) {
    if (FLOATS) {
        uvec4 raw[ROWS];
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            raw[r] = w4[(rowOff[r] >> 4u) + ch];
        }
        uint e = ch * CHUNK;
        [[unroll]] for (uint c = 0u; c < NC; c++) {
            if (WTYPE == W_F32) {
                vec4 xa = xq(c, e);
                [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                    acc[r][c] += dot(uintBitsToFloat(raw[r]), xa);
                }
            } else {
                vec4 xa = xq(c, e);
                vec4 xb = xq(c, e + 4u);
                [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                    vec4 a, b;
                    if (WTYPE == W_F16) {
                        a = vec4(unpackHalf2x16(raw[r].x), unpackHalf2x16(raw[r].y));
                        b = vec4(unpackHalf2x16(raw[r].z), unpackHalf2x16(raw[r].w));
                    } else {
                        a = vec4(bf16x2(raw[r].x), bf16x2(raw[r].y));
                        b = vec4(bf16x2(raw[r].z), bf16x2(raw[r].w));
                    }
                    acc[r][c] += dot(a, xa) + dot(b, xb); // rowBytes % 16 == 0: whole chunks
                }
            }
        }
    } else if (WTYPE == W_Q4_K) {
        // Chunk j of super-block sb: 16 bytes of the 32-byte group j/2,
        // low nibbles in sub-block 2*(j/2), high nibbles in the next.
        uint sb = ch >> 3u;
        uint j = ch & 7u;
        uint g = j >> 1u;
        uvec4 hdr[ROWS];
        uvec4 raw[ROWS];
        vec2 dd[ROWS];
        vec4 sm[ROWS]; // QCONV: scales and mins of sub-blocks 2g and 2g+1, once per row (not per column)
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            uint b = (rowOff[r] >> 4u) + sb * 9u;
            hdr[r] = w4[b];
            raw[r] = w4[b + 1u + j];
            if (QCONV != 0u) {
                dd[r] = unpackHalf2x16(hdr[r].x);
                sm[r] = q4kScaleMins(g, hdr[r]);
            }
        }
        uint e = sb * 256u + g * 64u + (j & 1u) * 16u;
        [[unroll]] for (uint c = 0u; c < NC; c++) {
            vec4 xl[4], xh[4];
            [[unroll]] for (uint i = 0u; i < 4u; i++) {
                xl[i] = xq(c, e + 4u * i);
                xh[i] = xq(c, e + 32u + 4u * i);
            }
            float sl = sumq(xl[0] + xl[1] + xl[2] + xl[3]);
            float sh = sumq(xh[0] + xh[1] + xh[2] + xh[3]);
            if (QCONV != 0u) {
                [[unroll]] for (uint i = 0u; i < 4u; i++) {
                    xl[i] *= POS_B;
                    xh[i] *= POS_HI;
                }
            }
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                float dl = 0.0, dh = 0.0;
                [[unroll]] for (uint i = 0u; i < 4u; i++) {
                    uint v = raw[r][i];
                    if (QCONV != 0u) {
                        vec4 lo, hi;
                        posNibbles(v, 0.0, lo, hi);
                        dl += dot(lo, xl[i]);
                        dh += dot(hi, xh[i]);
                    } else {
                        dl += dot(bytes4(v & 0x0f0f0f0fu, 0.0), xl[i]);
                        dh += dot(bytes4((v >> 4u) & 0x0f0f0f0fu, 0.0), xh[i]);
                    }
                }
                if (QCONV != 0u) {
                    acc[r][c] += dd[r].x * (sm[r].x * dl + sm[r].y * dh) - dd[r].y * (sm[r].z * sl + sm[r].w * sh);
                } else {
                    vec2 d2 = unpackHalf2x16(hdr[r].x);
                    uvec2 ml = wScaleMinK4(2u * g, hdr[r].y, hdr[r].z, hdr[r].w);
                    uvec2 mh = wScaleMinK4(2u * g + 1u, hdr[r].y, hdr[r].z, hdr[r].w);
                    acc[r][c] += d2.x * (float(ml.x) * dl + float(mh.x) * dh) - d2.y * (float(ml.y) * sl + float(mh.y) * sh);
                }
            }
        }
    } else if (WTYPE == W_Q5_K) {
        // Chunk j of super-block sb (176 bytes: the 16-byte header as
        // Q4_K's, 32 bytes qh, 128 bytes qs): 16 bytes of qs group
        // g = j/2, low nibbles in sub-block 2g and high nibbles in 2g+1,
        // and the 16 bytes of qh at the same l = 16*(j&1) + 0..15, whose
        // bits 2g and 2g+1 are the two sub-blocks' fifth bits.
        uint sb = ch >> 3u;
        uint j = ch & 7u;
        uint g = j >> 1u;
        uvec4 hdr[ROWS];
        uvec4 raw[ROWS];
        uvec4 qh[ROWS];
        vec2 dd[ROWS];
        vec4 sm[ROWS]; // QCONV: scales and mins of sub-blocks 2g and 2g+1, once per row
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            uint b = (rowOff[r] >> 4u) + sb * 11u;
            hdr[r] = w4[b];
            qh[r] = w4[b + 1u + (j & 1u)];
            raw[r] = w4[b + 3u + j];
            if (QCONV != 0u) {
                dd[r] = unpackHalf2x16(hdr[r].x);
                sm[r] = q4kScaleMins(g, hdr[r]);
            }
        }
        uint e = sb * 256u + g * 64u + (j & 1u) * 16u;
        [[unroll]] for (uint c = 0u; c < NC; c++) {
            vec4 xl[4], xh[4];
            [[unroll]] for (uint i = 0u; i < 4u; i++) {
                xl[i] = xq(c, e + 4u * i);
                xh[i] = xq(c, e + 32u + 4u * i);
            }
            float sl = sumq(xl[0] + xl[1] + xl[2] + xl[3]);
            float sh = sumq(xh[0] + xh[1] + xh[2] + xh[3]);
            if (QCONV != 0u) {
                [[unroll]] for (uint i = 0u; i < 4u; i++) {
                    xl[i] *= POS_B;
                    xh[i] *= POS_B;
                }
            }
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                float dl = 0.0, dh = 0.0;
                [[unroll]] for (uint i = 0u; i < 4u; i++) {
                    uint v = raw[r][i];
                    uint h = qh[r][i] >> (2u * g);
                    uint lo = (v & 0x0f0f0f0fu) | ((h & 0x01010101u) << 4u);
                    uint hi = ((v >> 4u) & 0x0f0f0f0fu) | ((h & 0x02020202u) << 3u);
                    if (QCONV != 0u) {
                        dl += dot(posBytes(lo, 0.0), xl[i]);
                        dh += dot(posBytes(hi, 0.0), xh[i]);
                    } else {
                        dl += dot(bytes4(lo, 0.0), xl[i]);
                        dh += dot(bytes4(hi, 0.0), xh[i]);
                    }
                }
                if (QCONV != 0u) {
                    acc[r][c] += dd[r].x * (sm[r].x * dl + sm[r].y * dh) - dd[r].y * (sm[r].z * sl + sm[r].w * sh);
                } else {
                    vec2 d2 = unpackHalf2x16(hdr[r].x);
                    uvec2 ml = wScaleMinK4(2u * g, hdr[r].y, hdr[r].z, hdr[r].w);
                    uvec2 mh = wScaleMinK4(2u * g + 1u, hdr[r].y, hdr[r].z, hdr[r].w);
                    acc[r][c] += d2.x * (float(ml.x) * dl + float(mh.x) * dh) - d2.y * (float(ml.y) * sl + float(mh.y) * sh);
                }
            }
        }
    } else if (WTYPE == W_Q8_0G) {
        // Half hb of block b: 16 int8 quants.
        uint b = ch >> 1u;
        uvec4 raw[ROWS];
        float d[ROWS];
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            uint gq = (rowOff[r] >> 4u) + (b >> 3u) * 17u;
            uvec4 h = w4[gq];
            raw[r] = w4[gq + 1u + 2u * (b & 7u) + (ch & 1u)];
            d[r] = unpackHalf2x16(h[(b & 7u) >> 1u])[b & 1u];
        }
        uint e = ch * 16u;
        [[unroll]] for (uint c = 0u; c < NC; c++) {
            vec4 xs[4];
            [[unroll]] for (uint i = 0u; i < 4u; i++) {
                xs[i] = xq(c, e + 4u * i);
                if (QCONV != 0u) {
                    xs[i] *= POS_B;
                }
            }
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                float s = 0.0;
                [[unroll]] for (uint i = 0u; i < 4u; i++) {
                    s += dot(QCONV != 0u ? posSbytes(raw[r][i]) : sbytes4(raw[r][i]), xs[i]);
                }
                acc[r][c] += d[r] * s;
            }
        }
    } else if (WTYPE == W_Q4_0G) {
        // Block ch: 16 bytes, low nibbles elements 0..15, high 16..31.
        uint b = ch;
        uvec4 raw[ROWS];
        float d[ROWS];
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            uint gq = (rowOff[r] >> 4u) + (b >> 3u) * 9u;
            uvec4 h = w4[gq];
            raw[r] = w4[gq + 1u + (b & 7u)];
            d[r] = unpackHalf2x16(h[(b & 7u) >> 1u])[b & 1u];
        }
        uint e = ch * 32u;
        [[unroll]] for (uint c = 0u; c < NC; c++) {
            vec4 xl[4], xh[4];
            [[unroll]] for (uint i = 0u; i < 4u; i++) {
                xl[i] = xq(c, e + 4u * i);
                xh[i] = xq(c, e + 16u + 4u * i);
                if (QCONV != 0u) {
                    xl[i] *= POS_B;
                    xh[i] *= POS_HI;
                }
            }
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                float s = 0.0;
                [[unroll]] for (uint i = 0u; i < 4u; i++) {
                    uint v = raw[r][i];
                    if (QCONV != 0u) {
                        vec4 lo, hi;
                        posNibbles(v, 8.0, lo, hi);
                        s += dot(lo, xl[i]) + dot(hi, xh[i]);
                    } else {
                        s += dot(bytes4(v & 0x0f0f0f0fu, 8.0), xl[i]) + dot(bytes4((v >> 4u) & 0x0f0f0f0fu, 8.0), xh[i]);
                    }
                }
                acc[r][c] += d[r] * s;
            }
        }
    } else if (WTYPE == W_Q6_KG) {
        // Chunk j of super-block s: half h = j/2, l in 16*(j&1) + 0..15 of
        // the four interleaved groups k: 16 bytes of ql at l and at l+32
        // and 16 bytes of qh.
        uint s = ch >> 2u;
        uint j = ch & 3u;
        uint h = j >> 1u;
        uvec4 ql1[ROWS], ql2[ROWS], qh[ROWS], sc[ROWS];
        float d[ROWS];
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            uint gq = (rowOff[r] >> 4u) + (s >> 3u) * 105u;
            uint b = gq + 1u + (s & 7u) * 13u;
            uvec4 hd = w4[gq];
            ql1[r] = w4[b + 4u * h + (j & 1u)];
            ql2[r] = w4[b + 4u * h + 2u + (j & 1u)];
            qh[r] = w4[b + 8u + 2u * h + (j & 1u)];
            sc[r] = w4[b + 12u];
            d[r] = unpackHalf2x16(hd[(s & 7u) >> 1u])[s & 1u];
        }
        uint e = s * 256u + h * 128u + (j & 1u) * 16u;
        // Scale byte of group k: 8h + (j&1) + 2k, i.e. word 2h + k/2 at byte (j&1) + 2(k&1).
        [[unroll]] for (uint c = 0u; c < NC; c++) {
            [[unroll]] for (uint k = 0u; k < 4u; k++) {
                vec4 xs[4];
                [[unroll]] for (uint i = 0u; i < 4u; i++) {
                    xs[i] = xq(c, e + 32u * k + 4u * i);
                    if (QCONV != 0u) {
                        xs[i] *= POS_B;
                    }
                }
                [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                    float t = 0.0;
                    [[unroll]] for (uint i = 0u; i < 4u; i++) {
                        uint lo = ((k & 1u) == 0u ? ql1[r][i] : ql2[r][i]) >> (4u * (k >> 1u));
                        uint q = (lo & 0x0f0f0f0fu) | (((qh[r][i] >> (2u * k)) & 0x03030303u) << 4u);
                        t += dot(QCONV != 0u ? posBytes(q, 32.0) : bytes4(q, 32.0), xs[i]);
                    }
                    uint sw = sc[r][2u * h + (k >> 1u)] >> (8u * ((j & 1u) + 2u * (k & 1u)));
                    float scale;
                    if (QCONV != 0u) {
                        // Signed byte to float under the exponent of 2^23 (no int-to-float conversion).
                        scale = uintBitsToFloat((sw & 0xffu) ^ 0x4b000080u) - 8388736.0;
                    } else {
                        scale = float(int(sw << 24u) >> 24);
                    }
                    acc[r][c] += (d[r] * scale) * t;
                }
            }
        }
    }
}

// Unit u (UNIT elements) of every row, quad by quad.
void unitStep(uint u) {
    const uint QUADS = UNIT / 4u;
    vec4 wq[ROWS][QUADS];
    [[unroll]] for (uint r = 0u; r < ROWS; r++) {
        if (W_BLOCKS) {
            float d = wBlockScale(rowOff[r], u);
            [[unroll]] for (uint q = 0u; q < QUADS; q++) {
                wq[r][q] = wBlockQuad(rowOff[r], u, q, d);
            }
        } else {
            [[unroll]] for (uint q = 0u; q < QUADS; q++) {
                wq[r][q] = wQuad(rowOff[r], UNIT * u + 4u * q);
            }
        }
    }
    [[unroll]] for (uint c = 0u; c < NC; c++) {
        [[unroll]] for (uint q = 0u; q < QUADS; q++) {
            vec4 xv = xq(c, UNIT * u + 4u * q);
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                acc[r][c] += dot(wq[r][q], xv);
            }
        }
    }
}

void main() {
    uint tid = gl_LocalInvocationID.x;
    uint group = gl_WorkGroupID.x + gl_WorkGroupID.z * pc.gridX;
    const uint HALF = ROWS / 2u;
    uint row0 = group * ROWS; // first row (GLU: first gate row, group * HALF)
    if (GLU != 0u) {
        row0 = group * HALF;
        if (row0 >= pc.split1) {
            return; // whole workgroup: uniform
        }
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            uint gr = r < HALF ? min(row0 + r, pc.split1 - 1u) : pc.split1 + min(row0 + r - HALF, pc.split1 - 1u);
            rowOff[r] = gr * pc.rowBytes;
        }
    } else {
        if (row0 >= pc.outDim) {
            return; // whole workgroup: uniform
        }
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            rowOff[r] = min(row0 + r, pc.outDim - 1u) * pc.rowBytes;
        }
    }
    uint in4 = pc.inDim / 4u;
    bool chunked = HAS_CHUNKS && (pc.rowBytes & 15u) == 0u;
    uint steps = chunked ? (pc.inDim + CHUNK - 1u) / CHUNK : pc.inDim / UNIT;
    uint colBase = gl_WorkGroupID.y * pc.passes * NC;
    for (uint p = 0u; p < min(pc.passes, MAX_PASSES); p++) {
        uint col0 = colBase + p * NC;
        if (col0 >= pc.n) {
            break; // uniform
        }
        [[unroll]] for (uint c = 0u; c < NC; c++) {
            xrow[c] = min(col0 + c, pc.n - 1u) * in4;
        }
        [[unroll]] for (uint c = 0u; c < NC; c++) {
            ss[c] = 0.0;
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                acc[r][c] = 0.0;
            }
        }
        uint u = tid;
        if (chunked) {
            // UNROLL chunks per iteration: their loads are independent, so
            // the compiler can issue them all before the arithmetic (more
            // bytes in flight per invocation). The chunks are still added
            // in the order u, u+WG, ...: the result does not depend on
            // UNROLL.
            const uint UN = clamp(UNROLL, 1u, 8u);
            uint s = 0u;
            for (; s < MAX_STEPS && u + (UN - 1u) * WG < steps; s += UN, u += UN * WG) {
                [[unroll]] for (uint k = 0u; k < UN; k++) {
                    chunkStep(u + k * WG);
                }
            }
            for (; s < MAX_STEPS && u < steps; s++, u += WG) {
                chunkStep(u);
            }
        } else {
            for (uint s = 0u; s < MAX_STEPS && u < steps; s++, u += WG) {
                unitStep(u);
            }
        }
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            [[unroll]] for (uint c = 0u; c < NC; c++) {
                red[(r * NC + c) * RS + tid] = acc[r][c];
            }
        }
        if (NORM != 0u) {
            [[unroll]] for (uint c = 0u; c < NC; c++) {
                red[(ROWS * NC + c) * RS + tid] = ss[c];
            }
        }
        barrier();
        // Two fixed-order stages: invocation t of (slot k, lane l < L) sums
        // the partials l, l+L, l+2L, ... of slot k into partial l (its own:
        // no other lane reads or writes them), then one invocation per
        // output sums the L lanes.
        const uint L = WG >= 64u ? WG / 8u : WG;
        const uint PER = WG / L;
        for (uint t = tid; t < SLOTS * L; t += WG) {
            uint k = t / L;
            uint l = t - k * L;
            float v = 0.0;
            [[unroll]] for (uint i = 0u; i < PER; i++) {
                v += red[k * RS + l + i * L];
            }
            red[k * RS + l] = v;
        }
        barrier();
#ifdef ROPE_KV
        for (uint k = tid; k < HALF * NC; k += WG) {
            uint r = 2u * (k / NC); // the pair's first row
            uint c = k - (k / NC) * NC;
            uint t = col0 + c;
            if (row0 + r < pc.outDim && t < pc.n) {
                // Each row summed as the plain epilogue sums it.
                float a = 0.0;
                for (uint l = 0u; l < L; l++) {
                    a += red[(r * NC + c) * RS + l];
                }
                float b = 0.0;
                for (uint l = 0u; l < L; l++) {
                    b += red[((r + 1u) * NC + c) * RS + l];
                }
                float rs = 1.0;
                if (NORM != 0u) {
                    float q = 0.0;
                    for (uint l = 0u; l < L; l++) {
                        q += red[(ROWS * NC + c) * RS + l];
                    }
                    rs = inversesqrt(q / float(pc.inDim) + pc.eps);
                }
                a *= rs;
                b *= rs;
                vec2 v = vec2(a, b);
                uint gr = pc.yOff + row0 + r; // row of the whole matrix
                uint seg = gr < pc.split1 ? 0u : gr < pc.split2 ? 1u : 2u;
                uint e = gr - (seg == 0u ? 0u : seg == 1u ? pc.split1 : pc.split2); // row in its segment
                uint i = (e % pc.headDim) / 2u; // pair in its head
                if (seg < 2u && i < pc.ropeDims / 2u) {
                    v = rotate(v, float(pos[t]) * invFreq[i]);
                }
                if (seg == 0u) {
                    uint o = t * pc.yStride + gr;
                    y[o] = v.x;
                    y[o + 1u] = v.y;
                    continue;
                }
                uint el = slots[t] * (seg == 1u ? pc.stride1 : pc.stride2) + e; // element of the pool, even
                if (KV_F16 != 0u) {
                    uint wd = packHalf2x16(v);
                    if (seg == 1u) {
                        poolK[el / 2u] = wd;
                    } else {
                        poolV[el / 2u] = wd;
                    }
                } else if (seg == 1u) {
                    poolK[el] = floatBitsToUint(v.x);
                    poolK[el + 1u] = floatBitsToUint(v.y);
                } else {
                    poolV[el] = floatBitsToUint(v.x);
                    poolV[el + 1u] = floatBitsToUint(v.y);
                }
            }
        }
#else
        const uint OUTR = GLU != 0u ? HALF : ROWS; // output rows per workgroup
        for (uint k = tid; k < OUTR * NC; k += WG) {
            uint r = k / NC;
            uint c = k - r * NC;
            bool valid = GLU != 0u ? row0 + r < pc.split1 : row0 + r < pc.outDim;
            if (valid && col0 + c < pc.n) {
                float v = 0.0;
                for (uint l = 0u; l < L; l++) {
                    v += red[k * RS + l];
                }
                float rs = 1.0;
                if (NORM != 0u) {
                    float q = 0.0;
                    for (uint l = 0u; l < L; l++) {
                        q += red[(ROWS * NC + c) * RS + l];
                    }
                    rs = inversesqrt(q / float(pc.inDim) + pc.eps);
                }
                v *= rs;
                if (GLU != 0u) {
                    float u = 0.0;
                    for (uint l = 0u; l < L; l++) {
                        u += red[((r + HALF) * NC + c) * RS + l];
                    }
                    y[(col0 + c) * pc.yStride + row0 + r] = silu(v) * (u * rs);
                    continue;
                }
                uint gr = pc.yOff + row0 + r; // row of the whole matrix
                if (gr < pc.split1) {
                    uint i = (col0 + c) * pc.yStride + gr;
                    y[i] = ADD != 0u ? y[i] + v : v;
                } else if (gr < pc.split2) {
                    y1[(col0 + c) * pc.stride1 + gr - pc.split1] = v;
                } else {
                    y2[(col0 + c) * pc.stride2 + gr - pc.split2] = v;
                }
            }
        }
#endif
        barrier(); // red is reused by the next pass
    }
}

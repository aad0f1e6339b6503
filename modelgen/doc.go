// Package modelgen makes random Llama models of real shapes (Llama 3 8B,
// Llama 2 7B, Llama 3.2 1B, and a tiny one for tests) in any weight type
// the project reads, without a model hub: GGUF files written tensor by
// tensor with bounded memory, or the same bytes generated on the GPU
// (model.LoadRandom and the weight_fill kernel).
//
// Weights are not quantized floats: each tensor's encoded bytes are drawn
// directly from a counter-based hash of (seed, tensor name, position), so
// any piece of any tensor can be produced independently, in parallel, on
// the CPU (Fill) or on the GPU (shaders/include/modelgen.glsl), bit for bit
// alike. Values are scaled so activations stay in range: matrices have a
// standard deviation near 1/sqrt(row length), norms are near 1, block
// scales are normal f16 numbers and K-quant sub-block scales are valid
// 6-bit (Q4_K, Q5_K) or positive 8-bit (Q6_K) numbers.
package modelgen

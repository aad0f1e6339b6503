#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
// matmul.comp for a decoding step's stacked Q/K/V weight with RoPE and the
// K/V pool write in its epilogue (ROPE_KV in include/matmul.glsl): one
// dispatch instead of the matmul, a barrier and rope_kv.comp, bit-identical
// to them.
#define ROPE_KV
#include "include/matmul.glsl"

#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
// y[c][o] (+)= sum_i x[c][i] * W[o][i] for decoding steps: see
// include/matmul.glsl (shared with matmul_rope.comp).
#include "include/matmul.glsl"

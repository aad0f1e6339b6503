#version 450
// The split-K reduction of gemm: y[i] (+)= sum over z < splits of
// part[z * pStride + i], in split order (deterministic), for the count
// elements of y that gemm's splits wrote (every row of n, every column).
// Grid-stride over elements, at most kernels.GridStrideSteps per invocation.
//
// ADD = 1 adds the sum to y (the residual stream) instead of storing it.

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ADD = 0u;

layout(set = 0, binding = 0) readonly buffer Pbuf { float part[]; };
layout(set = 0, binding = 1) buffer Ybuf { float y[]; };

layout(push_constant) uniform Push {
    uint count;    // elements of y
    uint splits;   // partial sums per element
    uint pStride;  // floats per split in part
} pc;

const uint MAX_STEPS = 1024u;   // kernels.GridStrideSteps
const uint MAX_SPLITS = 64u;    // kernels.GemmMaxSplits

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint i = gl_GlobalInvocationID.x;
    for (uint s = 0u; s < MAX_STEPS && i < pc.count; s++, i += stride) {
        float v = 0.0;
        for (uint z = 0u; z < min(pc.splits, MAX_SPLITS); z++) {
            v += part[z * pc.pStride + i];
        }
        y[i] = ADD != 0u ? y[i] + v : v;
    }
}

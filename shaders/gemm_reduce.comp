#version 450
// The split-K reduction of gemm: the sum over z < splits of
// part[z * pStride + i], in split order (deterministic), for the count
// elements that gemm's splits wrote (every row of n, every column; rows of
// pRow floats), stored to y, y1 or y2 by column as gemm stores them
// (columns before split1 to y, before split2 to y1, the rest to y2).
// Grid-stride over elements, at most kernels.GridStrideSteps per invocation.
//
// ADD = 1 adds the sum to y (the residual stream) instead of storing it.

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ADD = 0u;

layout(set = 0, binding = 0) readonly buffer Pbuf { float part[]; };
layout(set = 0, binding = 1) buffer Ybuf { float y[]; };
layout(set = 0, binding = 2) writeonly buffer Y1buf { float y1[]; };
layout(set = 0, binding = 3) writeonly buffer Y2buf { float y2[]; };

layout(push_constant) uniform Push {
    uint count;    // elements per split: rows x pRow
    uint splits;   // partial sums per element
    uint pStride;  // floats per split in part
    uint pRow;     // floats per activation row in part
    uint yStride;  // floats per row of y
    uint split1;   // first column stored to y1
    uint split2;   // first column stored to y2
    uint stride1;  // floats per row of y1
    uint stride2;  // floats per row of y2
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
        uint r = i / pc.pRow;
        uint c = i - r * pc.pRow;
        if (c < pc.split1) {
            uint at = r * pc.yStride + c;
            y[at] = ADD != 0u ? y[at] + v : v;
        } else if (c < pc.split2) {
            y1[r * pc.stride1 + c - pc.split1] = v;
        } else {
            y2[r * pc.stride2 + c - pc.split2] = v;
        }
    }
}

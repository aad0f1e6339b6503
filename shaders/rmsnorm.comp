#version 450
// y[r][:] = x[r][:] / sqrt(mean(x[r][:]^2) + eps) * weight[:], one
// workgroup per row (row = x + z * gridX). Each invocation sums the squares
// of a strided part of the row; the partial sums are reduced in shared
// memory in a fixed tree (deterministic, no subgroup-size assumption).

layout(local_size_x_id = 0) in; // a power of two

layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) readonly buffer Weight { float weight[]; };
layout(set = 0, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n;     // rows
    uint dim;   // elements per row, at most MAX_STEPS * workgroup size
    float eps;
    uint gridX;
} pc;

const uint WG = gl_WorkGroupSize.x;
const uint MAX_STEPS = 4096u;

shared float red[WG];

void main() {
    uint row = gl_WorkGroupID.x + gl_WorkGroupID.z * pc.gridX;
    if (row >= pc.n) {
        return; // whole workgroup
    }
    uint tid = gl_LocalInvocationID.x;
    uint base = row * pc.dim;
    float ss = 0.0;
    uint i = tid;
    for (uint s = 0u; s < MAX_STEPS && i < pc.dim; s++, i += WG) {
        float v = x[base + i];
        ss += v * v;
    }
    red[tid] = ss;
    barrier();
    for (uint h = WG / 2u; h > 0u; h >>= 1u) {
        if (tid < h) {
            red[tid] += red[tid + h];
        }
        barrier();
    }
    float scale = inversesqrt(red[0] / float(pc.dim) + pc.eps);
    i = tid;
    for (uint s = 0u; s < MAX_STEPS && i < pc.dim; s++, i += WG) {
        y[base + i] = x[base + i] * scale * weight[i];
    }
}

#version 450
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
// Sums each workgroup's slice of the input: subgroupAdd inside subgroups,
// then shared memory across them. Correct at any subgroup size, because the
// number of subgroups is read from gl_NumSubgroups, not assumed.
layout(local_size_x_id = 0) in;

layout(set = 0, binding = 0) readonly buffer In { float v[]; };
layout(set = 0, binding = 1) writeonly buffer Out { float sums[]; };
layout(push_constant) uniform Push { uint n; } pc;

// Enough for any subgroup size >= 1 at the largest workgroup we specialise.
shared float partial[1024];

void main() {
    uint i = gl_GlobalInvocationID.x;
    float x = i < pc.n ? v[i] : 0.0;
    float s = subgroupAdd(x);
    if (subgroupElect()) {
        partial[gl_SubgroupID] = s;
    }
    barrier();
    if (gl_LocalInvocationIndex == 0) {
        float total = 0.0;
        for (uint k = 0; k < gl_NumSubgroups; k++) {
            total += partial[k];
        }
        sums[gl_WorkGroupID.x] = total;
    }
}

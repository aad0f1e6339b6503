#version 450
// Reads a range of a buffer so that its lines sit in the GPU's L2 cache when
// a later dispatch reads them. A decoding step records it right after the
// attention dispatch, with no barrier between (it writes nothing the
// attention reads or writes), for the next matmul's weights: attention over
// one sequence is latency-bound and leaves most of the memory bandwidth
// idle, which the prefetch uses (model.Options.PrefetchBytes).
//
// Each invocation XORs the 16-byte words it reads, grid-stride over a
// bounded number of steps. The sum is written (an integer atomic XOR into
// Sink, order-independent) only with pc.check set, or when it equals
// pc.magic: a condition the compiler cannot prove false, so the loads stay,
// and that costs no writes in practice. Tests set pc.check and compare Sink
// with the XOR of the range: every word read once.

layout(local_size_x_id = 0) in;

layout(set = 0, binding = 0) readonly buffer Src { uvec4 src[]; };
layout(set = 0, binding = 1) buffer Sink { uint sink[]; };

layout(push_constant) uniform Push {
    uint first; // first 16-byte word of the range
    uint n;     // 16-byte words
    uint check; // tests: always XOR the sum into sink[0..3]
    uint magic; // otherwise only when every lane of the sum equals it
} pc;

const uint MAX_STEPS = 1024u;   // kernels.GridStrideSteps

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint i = gl_GlobalInvocationID.x;
    uvec4 acc = uvec4(0u);
    for (uint s = 0u; s < MAX_STEPS && i < pc.n; s++, i += stride) {
        acc ^= src[pc.first + i];
    }
    if (pc.check != 0u || all(equal(acc, uvec4(pc.magic)))) {
        atomicXor(sink[0], acc.x);
        atomicXor(sink[1], acc.y);
        atomicXor(sink[2], acc.z);
        atomicXor(sink[3], acc.w);
    }
}

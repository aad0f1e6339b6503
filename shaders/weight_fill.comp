#version 450
// Writes a range of a random tensor's GGUF encoding (package modelgen's
// generator, include/modelgen.glsl): output word i holds the tensor's bytes
// [byteBase + 4i, byteBase + 4i + 4). Grid-stride over a bounded number of
// steps (the host sizes the grid).
#extension GL_GOOGLE_include_directive : require

#include "include/modelgen.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TYPE = 0u; // GGUF tensor type

layout(set = 0, binding = 0) writeonly buffer Out { uint o[]; };

layout(push_constant) uniform Push {
    uint key;      // modelgen.Params.Key
    uint norm;     // 1: a norm weight
    int exp;       // modelgen.Params.Exp
    uint byteBase; // tensor byte offset of word 0
    uint words;    // words to write
} pc;

const uint MAX_STEPS = 1024u;

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint i = gl_GlobalInvocationID.x;
    bool norm = pc.norm != 0u;
    for (uint s = 0u; s < MAX_STEPS && i < pc.words; s++, i += stride) {
        uint off = pc.byteBase + 4u * i;
        uint v = 0u;
        for (uint j = 0u; j < 4u; j++) {
            v |= mg_byte(TYPE, pc.key, norm, pc.exp, off + j) << (8u * j);
        }
        o[i] = v;
    }
}

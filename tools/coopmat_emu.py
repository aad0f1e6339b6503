#!/usr/bin/env python3
"""Cooperative-matrix emulation of partial_attn_coopmat.comp for lavapipe.

Lavapipe (Mesa 22.3) has no VK_KHR_cooperative_matrix. This rewrites the
coopmat shader's 16x16x16 matrices into per-lane arrays (element e of a
matrix on lane e % SG, index e / SG) with subgroup shuffles for the
multiply-add, so the kernel's control flow, indexing, softmax and split-K
merge run on the CPU driver:

    tools/coopmat_emu.py shaders/partial_attn_coopmat.comp /tmp/emu.comp 16
    glslang --target-env vulkan1.2 -V /tmp/emu.comp -o /tmp/emu.spv

Then, in a scratch copy of the tree (never committed): put /tmp/emu.spv in
shaders/spv/partial_attn_coopmat.spv, make kernels.AttnCoopMatShape return
16x16x16 and requiresCoopMatF16 nil, let treeattn.limitsOf set CoopMat
without info.CooperativeMatrix, and run the coopmat tests with
LP_NATIVE_VECTOR_WIDTH=512 (subgroups of 16; SG must match). Keep items
short (a few tiles): the emulation's loops count against lavapipe's 65535
loop iterations per invocation. At LP_NATIVE_VECTOR_WIDTH=1024 (subgroups
of 32) the emulation gives wrong results even for the old kernel: use 16.
"""
import re,sys
s=open(sys.argv[1]).read()
s=s.replace('#extension GL_KHR_cooperative_matrix : require\n','')
s=s.replace('coopmat<float16_t, gl_ScopeSubgroup, CM_M, CM_K, gl_MatrixUseA>','CMA')
s=s.replace('coopmat<float16_t, gl_ScopeSubgroup, CM_K, CM_N, gl_MatrixUseB>','CMB')
s=s.replace('coopmat<float, gl_ScopeSubgroup, CM_M, CM_N, gl_MatrixUseAccumulator>','CMC')
assert 'coopmat<' not in s, re.findall(r'coopmat<[^>]*>', s)
s=s.replace('CMC(0.0)','cmcZero()')
s=s.replace('gl_CooperativeMatrixLayoutRowMajor','0u').replace('gl_CooperativeMatrixLayoutColumnMajor','1u')
def load(m):
    first=m.group(1).strip()
    base=first.split('[')[0]
    if base in ('qA','qa','pA','kB','vB'):
        return 'EMU_LOAD_AB('+m.group(1)+','
    if base in ('al','fm'):
        return 'EMU_LOAD_C('+m.group(1)+','
    raise Exception(first)
s=re.sub(r'coopMatLoad\(([^,]+),', load, s)
s=s.replace('coopMatStore(','EMU_STORE_C(').replace('coopMatMulAdd(','emuMulAdd(')
s=re.sub(r'(acc\[j\]) \* (al|fm);', r'emuMul(\1, \2);', s)
emu=r'''
#define SGE_ SGEVAL
#define NE_ (256u / SGE_)

// ---- cooperative-matrix emulation (16x16x16, subgroups of 32) ----
#define EMU_LOAD_AB(m, arr, off, st, layout) { for (uint i_ = 0u; i_ < NE_; i_++) { uint e_ = gl_SubgroupInvocationID + i_ * SGE_; uint r_ = e_ / 16u; uint c_ = e_ % 16u; m.v[i_] = float((layout) == 0u ? arr[(off) + r_ * (st) + c_ / 4u][c_ % 4u] : arr[(off) + c_ * (st) + r_ / 4u][r_ % 4u]); } }
#define EMU_LOAD_C(m, arr, off, st, layout) { for (uint i_ = 0u; i_ < NE_; i_++) { uint e_ = gl_SubgroupInvocationID + i_ * SGE_; m.v[i_] = arr[(off) + (e_ / 16u) * (st) + e_ % 16u]; } }
#define EMU_STORE_C(m, arr, off, st, layout) { for (uint i_ = 0u; i_ < NE_; i_++) { uint e_ = gl_SubgroupInvocationID + i_ * SGE_; arr[(off) + (e_ / 16u) * (st) + e_ % 16u] = m.v[i_]; } }
struct CMA { float v[NE_]; };
struct CMB { float v[NE_]; };
struct CMC { float v[NE_]; };
CMC cmcZero() { CMC c; for (uint i = 0u; i < NE_; i++) { c.v[i] = 0.0; } return c; }
CMC emuMul(CMC x, CMC y) { for (uint i = 0u; i < NE_; i++) { x.v[i] *= y.v[i]; } return x; }
CMC emuMulAdd(CMA a, CMB b, CMC c) {
    float fa[256];
    float fb[256];
    for (uint idx = 0u; idx < 256u; idx++) {
        fa[idx] = subgroupShuffle(a.v[idx / SGE_], idx % SGE_);
        fb[idx] = subgroupShuffle(b.v[idx / SGE_], idx % SGE_);
    }
    for (uint i = 0u; i < NE_; i++) {
        uint e = gl_SubgroupInvocationID + i * SGE_;
        uint r = e / 16u;
        uint col = e % 16u;
        float acc = c.v[i];
        for (uint k = 0u; k < 16u; k++) {
            acc += fa[r * 16u + k] * fb[k * 16u + col];
        }
        c.v[i] = acc;
    }
    return c;
}
'''
i=s.index('layout(set = 0, binding = 0)')
s=s[:i]+emu+s[i:]
s=s.replace('SGEVAL', sys.argv[3]+'u')
open(sys.argv[2],'w').write(s)

package model

import (
	"testing"

	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/vk"
)

// TestMatmulShapeFor checks matmulShapeFor's rules on the decode matrices
// of Llama-3-8B and smaller ones, for every weight type and 1..8 activation
// rows per pass: CPU devices keep the default; on a GPU, rows per
// workgroup are even, at least 2 and at most matmulStartRows (which keeps
// rows x columns within 32), fewer rows are only taken while the
// workgroups would not reach matmulTargetGroups, Q8_0 and Q4_0 never get
// fewer rows than float ones (K-quants may: 4 rows measured best), and
// wide workgroups and
// unrolling only go to matrices still short of workgroups, within the
// device's invocations and the rows' steps.
func TestMatmulShapeFor(t *testing.T) {
	types := []uint32{kernels.WeightF32, kernels.WeightF16, kernels.WeightBF16, kernels.WeightQ8_0G, kernels.WeightQ4_0G,
		kernels.WeightQ4_K, kernels.WeightQ6_KG, kernels.WeightQ5_K}
	const embd, kv, ffn, vocab = 4096, 1024, 14336, 128256
	rowsOf := []int{embd, kv, ffn, vocab, embd + 2*kv, 2 * ffn, 64, 1, 300}
	checked := 0
	for _, wt := range types {
		for _, nc := range []int{1, 2, 4, 8} {
			start := matmulStartRows(wt, nc)
			if start < 2 || start%2 != 0 || start*nc > 32 && start > 2 {
				t.Errorf("type %d, %d columns: start at %d rows", wt, nc, start)
			}
			for _, rows := range rowsOf {
				for _, cols := range []int{256, embd, ffn} {
					steps := cols / 8
					if ce := kernels.MatmulChunkElems(wt); ce > 0 {
						steps = ceilDiv(cols, ce)
					}
					if got := matmulShapeFor(vk.TypeCPU, 1024, wt, rows, steps, nc); got != defaultMatmulShape {
						t.Errorf("CPU, type %d, %dx%d: %v, want the default %v", wt, cols, rows, got, defaultMatmulShape)
					}
					for _, maxInv := range []uint32{128, 1024} {
						s := matmulShapeFor(vk.TypeDiscrete, maxInv, wt, rows, steps, nc)
						checked++
						groups := ceilDiv(rows, s.rows)
						switch {
						case s.rows < 2 || s.rows > start || s.rows%2 != 0:
							t.Errorf("type %d, %dx%d, %d columns: %v: rows per workgroup out of 2..%d or odd", wt, cols, rows, nc, s, start)
						case s.rows < start && ceilDiv(rows, 2*s.rows) >= matmulTargetGroups:
							t.Errorf("type %d, %dx%d, %d columns: %v: %d workgroups with twice the rows would reach the target %d",
								wt, cols, rows, nc, s, ceilDiv(rows, 2*s.rows), matmulTargetGroups)
						case s.rows > 2 && groups < matmulTargetGroups:
							t.Errorf("type %d, %dx%d, %d columns: %v: only %d workgroups with more than 2 rows", wt, cols, rows, nc, s, groups)
						case s.group != 128 && (s.group != 256 || groups >= matmulTargetGroups/2 || uint32(s.group) > maxInv || steps < s.group):
							t.Errorf("type %d, %dx%d: %v: %d invocations for %d workgroups of %d steps (device %d)",
								wt, cols, rows, s, s.group, groups, steps, maxInv)
						case s.unroll > 1 && (groups >= matmulTargetGroups/2 || steps < s.unroll*s.group):
							t.Errorf("type %d, %dx%d: %v: unrolled with %d workgroups of %d steps", wt, cols, rows, s, groups, steps)
						}
						f := matmulShapeFor(vk.TypeDiscrete, maxInv, kernels.WeightF16, rows, steps, nc)
						if (wt == kernels.WeightQ8_0G || wt == kernels.WeightQ4_0G) && s.rows < f.rows {
							t.Errorf("type %d, %dx%d, %d columns: %v has fewer rows than F16's %v", wt, cols, rows, nc, s, f)
						}
					}
				}
			}
		}
	}
	// The narrow K/V matrices of Llama-3-8B must get more workgroups than
	// the former fixed 4 rows gave them (256).
	if s := matmulShapeFor(vk.TypeDiscrete, 1024, kernels.WeightF16, kv, embd/8, 1); ceilDiv(kv, s.rows) <= ceilDiv(kv, defaultMatmulShape.rows) {
		t.Errorf("K/V 4096x1024 F16: %v gives no more workgroups than the default %v", s, defaultMatmulShape)
	}
	t.Logf("%d GPU shape choices checked", checked)
}

package model

import (
	"testing"

	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/vk"
)

// TestMatmulShapeFor checks matmulShapeFor's rules on the decode matrices
// of Llama-3-8B and smaller ones, for every weight type: CPU devices keep
// the default; on a GPU, rows per workgroup are 2..8 and even (GLU halves
// them), fewer rows are only taken while the workgroups would not reach
// matmulTargetGroups, quantized types never get fewer rows than float ones,
// and wide workgroups and unrolling only go to matrices still short of
// workgroups, within the device's invocations and the rows' steps.
func TestMatmulShapeFor(t *testing.T) {
	types := []uint32{kernels.WeightF32, kernels.WeightF16, kernels.WeightBF16, kernels.WeightQ8_0G, kernels.WeightQ4_0G,
		kernels.WeightQ4_K, kernels.WeightQ6_KG}
	const embd, kv, ffn, vocab = 4096, 1024, 14336, 128256
	rowsOf := []int{embd, kv, ffn, vocab, embd + 2*kv, 2 * ffn, 64, 1, 300}
	checked := 0
	for _, wt := range types {
		for _, rows := range rowsOf {
			for _, cols := range []int{256, embd, ffn} {
				steps := cols / 8
				if ce := kernels.MatmulChunkElems(wt); ce > 0 {
					steps = ceilDiv(cols, ce)
				}
				if got := matmulShapeFor(vk.TypeCPU, 1024, wt, rows, steps); got != defaultMatmulShape {
					t.Errorf("CPU, type %d, %dx%d: %v, want the default %v", wt, cols, rows, got, defaultMatmulShape)
				}
				for _, maxInv := range []uint32{128, 1024} {
					s := matmulShapeFor(vk.TypeDiscrete, maxInv, wt, rows, steps)
					checked++
					groups := ceilDiv(rows, s.rows)
					switch {
					case s.rows < 2 || s.rows > 8 || s.rows%2 != 0:
						t.Errorf("type %d, %dx%d: %v: rows per workgroup out of 2..8 or odd", wt, cols, rows, s)
					case s.rows < 4 && wt < kernels.WeightQ8_0 && ceilDiv(rows, 2*s.rows) >= matmulTargetGroups,
						s.rows < 8 && wt >= kernels.WeightQ8_0 && ceilDiv(rows, 2*s.rows) >= matmulTargetGroups:
						t.Errorf("type %d, %dx%d: %v: %d workgroups with twice the rows would reach the target %d",
							wt, cols, rows, s, ceilDiv(rows, 2*s.rows), matmulTargetGroups)
					case s.rows > 2 && groups < matmulTargetGroups:
						t.Errorf("type %d, %dx%d: %v: only %d workgroups with more than 2 rows", wt, cols, rows, s, groups)
					case s.group != 128 && (s.group != 256 || groups >= matmulTargetGroups/2 || uint32(s.group) > maxInv || steps < s.group):
						t.Errorf("type %d, %dx%d: %v: %d invocations for %d workgroups of %d steps (device %d)",
							wt, cols, rows, s, s.group, groups, steps, maxInv)
					case s.unroll > 1 && (groups >= matmulTargetGroups/2 || steps < s.unroll*s.group):
						t.Errorf("type %d, %dx%d: %v: unrolled with %d workgroups of %d steps", wt, cols, rows, s, groups, steps)
					}
					if f := matmulShapeFor(vk.TypeDiscrete, maxInv, kernels.WeightF16, rows, steps); wt >= kernels.WeightQ8_0 && s.rows < f.rows {
						t.Errorf("type %d, %dx%d: %v has fewer rows than F16's %v", wt, cols, rows, s, f)
					}
				}
			}
		}
	}
	// The narrow K/V matrices of Llama-3-8B must not keep the default's 4
	// rows (256 workgroups).
	if s := matmulShapeFor(vk.TypeDiscrete, 1024, kernels.WeightF16, kv, embd/8); ceilDiv(kv, s.rows) <= ceilDiv(kv, defaultMatmulShape.rows) {
		t.Errorf("K/V 4096x1024 F16: %v gives no more workgroups than the default %v", s, defaultMatmulShape)
	}
	t.Logf("%d GPU shape choices checked", checked)
}

package treeattn_test

import (
	"testing"

	"github.com/deft-vk/deft/bench"
	"github.com/deft-vk/deft/treeattn"
)

func BenchmarkProf(b *testing.B) {
	for _, snap := range bench.Snapshots {
		tree, _ := snap.Build(bench.Source{})
		if !tree.SlotsAssigned() {
			tree.AssignContiguousSlots()
		}
		lim := h200Limits
		lim.CoopMat = treeattn.CoopMat{M: 16, N: 16, K: 16, Subgroup: 32}
		b.Run(snap.Name, func(b *testing.B) {
			cfg := treeattn.Config{Method: treeattn.MethodFlatten, Shape: treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}, Limits: lim, KV: treeattn.KVF16}
			var p treeattn.Planner
			cpu0 := threadCPU()
			var pl *treeattn.Plan
			for b.Loop() {
				pl, _ = p.Plan(tree, cfg)
			}
			b.ReportMetric(float64(threadCPU()-cpu0)/float64(b.N)/1e3, "cpu-us/op")
			b.ReportMetric(float64(pl.Items), "items")
			b.ReportMetric(float64(pl.BlockTokens), "block")
			b.Logf("%s variant %s tiles %+v", snap.Name, pl.Variant, pl.Tiles)
		})
	}
}

package treeattn_test

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/deft-vk/deft/bench"
	"github.com/deft-vk/deft/treeattn"
)

// h200Limits are the H200's limits (the planner only reads these numbers),
// with its cooperative-matrix shape, so that each tree plans for the
// variant `deft bench` picks there (coopmat item classes for the few-shot
// trees and the star, scalar for sorting).
var h200Limits = treeattn.Limits{SharedMemory: 49152, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{1 << 31, 65535, 65535},
	CoopMat: treeattn.CoopMat{M: 16, N: 16, K: 16, Subgroup: 32}}

// BenchmarkPlan times host planning of one decoding step of the four
// snapshot trees for Llama-3-8B attention (the target: flatten at
// most 200 us for few-shot b=50 and sorting, 100 us for the speculative star).
func BenchmarkPlan(b *testing.B) {
	for _, snap := range bench.Snapshots {
		tree, err := snap.Build(bench.Source{})
		if err != nil {
			b.Fatalf("%s: %v", snap.Name, err)
		}
		if !tree.SlotsAssigned() {
			tree.AssignContiguousSlots()
		}
		for _, run := range []struct {
			name   string
			m      treeattn.Method
			unique bool
		}{{"flatten", treeattn.MethodFlatten, false}, {"flatten-kvpool", treeattn.MethodFlatten, true}, {"flashdecoding", treeattn.MethodFlashDecoding, false}} {
			b.Run(snap.Name+"/"+run.name, func(b *testing.B) {
				// flatten-kvpool: slots known distinct, as in a kvpool step.
				cfg := treeattn.Config{Method: run.m, Shape: treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}, Limits: h200Limits,
					KV: treeattn.KVF16, SlotsUnique: run.unique}
				var p treeattn.Planner
				b.ReportAllocs()
				cpu0 := threadCPU()
				for b.Loop() {
					if _, err := p.Plan(tree, cfg); err != nil {
						b.Fatal(err)
					}
				}
				// CPU time of this thread: wall time is meaningless on a
				// loaded 2-core machine.
				b.ReportMetric(float64(threadCPU()-cpu0)/float64(b.N)/1e3, "cpu-us/op")
			})
		}
	}
}

// BenchmarkPlanIncremental times what decoding does: planning step n+1
// (treeattn.NextStep: every queried leaf one token longer) with the
// Planner that planned step n, from scratch (Plan) and incrementally
// (PlanNext). Each iteration plans step n untimed first, so that every
// timed plan starts from step n's state.
func BenchmarkPlanIncremental(b *testing.B) {
	for _, snap := range bench.Snapshots {
		tree, err := snap.Build(bench.Source{})
		if err != nil {
			b.Fatalf("%s: %v", snap.Name, err)
		}
		if !tree.SlotsAssigned() {
			tree.AssignContiguousSlots()
		}
		next := treeattn.NextStep(tree)
		for _, run := range []struct {
			name   string
			unique bool
			incr   bool
		}{{"flatten-scratch", false, false}, {"flatten-next", false, true}, {"flatten-next-kvpool", true, true}} {
			b.Run(snap.Name+"/"+run.name, func(b *testing.B) {
				cfg := treeattn.Config{Method: treeattn.MethodFlatten, Shape: treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 128},
					Limits: h200Limits, KV: treeattn.KVF16, SlotsUnique: run.unique}
				var p treeattn.Planner
				b.ReportAllocs()
				var cpu int64
				reused := 0
				for b.Loop() {
					if _, err := p.Plan(tree, cfg); err != nil {
						b.Fatal(err)
					}
					cpu0 := threadCPU()
					if _, err := p.PlanNext(next, cfg, run.incr); err != nil {
						b.Fatal(err)
					}
					cpu += threadCPU() - cpu0
					reused = p.Reused()
				}
				b.ReportMetric(float64(cpu)/float64(b.N)/1e3, "cpu-us/op")
				b.ReportMetric(float64(reused), "units-copied")
			})
		}
	}
}

// threadCPU is the calling thread's CPU time in ns (the benchmark loop
// stays on one locked thread), from CLOCK_THREAD_CPUTIME_ID: nanosecond
// resolution, where getrusage counts scheduler ticks (too coarse to time
// one plan at a time).
func threadCPU() int64 {
	runtime.LockOSThread()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

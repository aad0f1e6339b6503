package replay

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/treeattn"
)

// llama3 is Llama-3-8B's KV shape: what the peak figures are quoted for.
var llama3 = kvpool.Config{Layers: 32, KVHeads: 8, HeadDim: 128, KV: treeattn.KVF16}

func hostPool(t testing.TB, budget uint64) *kvpool.Pool {
	t.Helper()
	cfg := llama3
	cfg.BudgetBytes = budget
	p, err := kvpool.NewHost(cfg)
	require.NoError(t, err)
	return p
}

// pathLengths lists each query's path length, the tree's observable shape.
func pathLengths(t *treeattn.Tree) []int {
	out := make([]int, len(t.Queries))
	for i := range t.Queries {
		out[i] = len(t.QuerySlots(i))
	}
	return out
}

// drive replays w on a host pool in lockstep with the logical simulator and
// requires the same tree every step: queries, path lengths, tokens held and
// live branches.
func drive(t *testing.T, w Workload, budget uint64) (peak kvpool.Stats, peakTokens int, treeTime []time.Duration) {
	t.Helper()
	p := hostPool(t, budget)
	d := NewPoolDriver(p)
	sim := NewSimulator()
	for st := range Steps(w) {
		require.NoError(t, sim.Begin(st))
		want, err := sim.Tree()
		require.NoError(t, err)
		got, err := d.Begin(st)
		require.NoError(t, err)
		require.NoError(t, got.Tree.Validate(p.NumSlots()))
		require.Equal(t, pathLengths(want), pathLengths(got.Tree), "step %d", st.Index)
		stats := p.Stats()
		require.Equal(t, sim.Stats().Tokens, stats.Tokens, "step %d: tokens held", st.Index)
		require.Equal(t, sim.Stats().Leaves, stats.Sequences, "step %d: live branches", st.Index)
		if stats.BytesInUse > peak.BytesInUse {
			peak = stats
		}
		peakTokens = max(peakTokens, stats.Tokens)
		treeTime = append(treeTime, d.TreeTime)
		require.NoError(t, sim.End(st))
		require.NoError(t, d.End(st))
	}
	require.Equal(t, p.NumPages(), p.FreePages(), "the last step releases everything")
	return peak, peakTokens, treeTime
}

func TestPoolDriverFewShot(t *testing.T) {
	w, err := NewFewShot(300, 6, 40)
	require.NoError(t, err)
	peak, _, _ := drive(t, w, 1<<30)
	require.Positive(t, peak.BytesSaved, "branches share the prompt")
}

func TestPoolDriverReasoning(t *testing.T) {
	trees, err := ReadReasoningFile(filepath.Join("testdata", "deft", "sorting128ToT_first3.json"))
	require.NoError(t, err)
	done := 0
	for _, tr := range Completed(trees) {
		w, err := NewReasoning(tr)
		require.NoError(t, err)
		drive(t, w, 16<<30)
		done++
	}
	require.Positive(t, done)
}

func TestPoolDriverSpeculative(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "deft", "APPS_tree_size32_2records.json"))
	require.NoError(t, err)
	spec, err := ParseSpeculativeJSON(raw)
	require.NoError(t, err)
	w, err := NewSpeculative(spec, SpecOptions{Prefix: 100, Steps: 30})
	require.NoError(t, err)
	p := hostPool(t, 1<<30)
	d := NewPoolDriver(p)
	for st := range Steps(w) {
		step, err := d.Begin(st)
		require.NoError(t, err)
		require.Len(t, step.Tree.Queries, len(st.Queries))
		require.NoError(t, d.End(st))
	}
	// Drafted token trees and in-place accepts: no token was copied.
	require.Zero(t, p.Stats().MovedTokens)
}

// TestPeakPoolSizes logs the figures issue 4 asks for: the peak pool size
// with and without sharing and the host time per step to produce the tree,
// for few-shot b=50 and the sorting trace's largest tree.
func TestPeakPoolSizes(t *testing.T) {
	report := func(name string, w Workload, budget uint64) {
		peak, peakTokens, times := drive(t, w, budget)
		slices.Sort(times)
		var sum time.Duration
		for _, d := range times {
			sum += d
		}
		t.Logf("%s: peak %d tokens in %d pages = %.1f MiB with sharing, %.1f MiB without (%.1fx); tree per step: mean %v, p50 %v, max %v over %d steps",
			name, peakTokens, peak.PagesInUse, float64(peak.BytesInUse)/(1<<20), float64(peak.BytesUnshared)/(1<<20),
			float64(peak.BytesUnshared)/float64(peak.BytesInUse), sum/time.Duration(len(times)), times[len(times)/2], times[len(times)-1], len(times))
		require.Greater(t, peak.BytesUnshared, peak.BytesInUse, name)
	}
	w, err := NewFewShot(4000, 50, 400)
	require.NoError(t, err)
	report("few-shot b=50", w, 4<<30)

	// The whole sorting trace (its largest tree replays 6982 steps, ~20 s)
	// only on request; the sample's largest tree otherwise.
	path := filepath.Join("testdata", "deft", "sorting128ToT_first3.json")
	if os.Getenv("DEFT_REPLAY_FULL") != "" {
		path = filepath.Join("..", "..", "shared", "workloads", "deft", "reasoning", "sorting128ToT.json")
	}
	t.Logf("reasoning trees from %s (DEFT_REPLAY_FULL=1 selects the whole trace)", path)
	trees, err := ReadReasoningFile(path)
	require.NoError(t, err)
	largest := slices.MaxFunc(Completed(trees), func(a, b *ReasoningTree) int { return a.TotalTokens() - b.TotalTokens() })
	w2, err := NewReasoning(largest)
	require.NoError(t, err)
	report("sorting "+largest.Name, w2, 16<<30)
}

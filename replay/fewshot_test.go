package replay

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/treeattn"
)

// checkFewShot replays a few-shot workload and checks every step against
// the workload's definition: the prompt, then b tokens per step, b live
// branches, and, every treeEvery steps (0: never) and at the last step, the
// tree treeattn.FewShotTree builds.
func checkFewShot(t *testing.T, p, b, l, treeEvery int) *Simulator {
	t.Helper()
	w, err := NewFewShot(p, b, l)
	require.NoError(t, err)
	require.Equal(t, l+1, w.Len())
	steps := 0
	sim, err := Run(w, func(st Step, sim *Simulator) error {
		checkStepKinds(t, st)
		require.Equal(t, steps, st.Index)
		steps++
		s := sim.Stats()
		if st.Index == 0 {
			require.True(t, st.Prefill)
			require.Equal(t, p, s.Tokens)
			require.Equal(t, 1, s.Leaves)
			require.Len(t, st.Queries, 1)
		} else {
			require.False(t, st.Prefill)
			require.Len(t, st.Queries, b, "one query per branch")
			require.Equal(t, b, s.Leaves, "live branches")
			require.Equal(t, b+1, s.Nodes)
			require.Equal(t, p+b*st.Index, s.Tokens, "tokens held with sharing")
			require.Equal(t, b*(p+st.Index), s.UnsharedTokens, "tokens held without sharing")
		}
		if treeEvery > 0 && st.Index > 0 && (st.Index%treeEvery == 0 || st.Index == l) {
			tr := checkTree(t, sim)
			require.Equal(t, treeattn.FewShotTree(p, b, st.Index), tr)
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, l+1, steps)
	s := sim.Stats()
	assert.Equal(t, p+b*l, s.Appended)
	assert.Equal(t, 1+b*l, s.Queries)
	assert.Equal(t, b, s.MaxQueries)
	assert.Equal(t, p+b*l, s.PeakTokens)
	assert.Equal(t, b*(p+l), s.PeakUnsharedTokens)
	assert.Equal(t, b+1, s.PeakNodes)
	assert.Zero(t, s.Nodes, "everything released")
	assert.Zero(t, s.Tokens)
	assert.Zero(t, s.UnsharedTokens)
	return sim
}

func TestFewShotSmall(t *testing.T) {
	rng := testRNG(t)
	for range 20 {
		p, b, l := 1+rng.IntN(50), 1+rng.IntN(8), 1+rng.IntN(20)
		checkFewShot(t, p, b, l, 1)
	}
}

// TestFewShotPaperShapes replays the paper's shapes (P=4000, L=400,
// b=20/30/50) and logs the peak tokens held with and without sharing.
func TestFewShotPaperShapes(t *testing.T) {
	for _, b := range []int{20, 30, 50} {
		sim := checkFewShot(t, FewShotPrompt, b, FewShotSteps, 37)
		s := sim.Stats()
		t.Logf("fewshot P=%d b=%d L=%d: peak tokens with sharing %d, without %d (%.2fx)",
			FewShotPrompt, b, FewShotSteps, s.PeakTokens, s.PeakUnsharedTokens,
			float64(s.PeakUnsharedTokens)/float64(s.PeakTokens))
	}
}

func TestFewShotErrors(t *testing.T) {
	for _, c := range [][3]int{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}, {-1, 1, 1}} {
		w, err := NewFewShot(c[0], c[1], c[2])
		require.Error(t, err, "%v", c)
		assert.Nil(t, w)
		assert.Contains(t, err.Error(), "must all be at least 1")
	}
	_, err := NewFewShot(treeattn.MaxTreeTokens, 2, 1)
	require.ErrorContains(t, err, "exceed the tree limits")
	_, err = NewFewShot(1, treeattn.MaxTreeNodes, 1)
	require.ErrorContains(t, err, "exceed the tree limits")
	w, err := NewFewShot(FewShotPrompt, 50, FewShotSteps)
	require.NoError(t, err)
	assert.Equal(t, "fewshot-P4000-b50-L400", w.Name())
}

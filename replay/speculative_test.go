package replay

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/treeattn"
)

func readSpec(t testing.TB, path string) *SpecTree {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	s, err := ParseSpeculativeJSON(data)
	require.NoError(t, err)
	return s
}

// checkSpeculative replays w over s and checks every step: a token tree of
// s.Size() new one-token nodes below the committed sequence, all of them
// queries, and the recorded accept length committed afterwards.
func checkSpeculative(t *testing.T, s *SpecTree, w *Speculative, prefix int, trees bool) *Simulator {
	t.Helper()
	n := s.Size()
	depths := s.Depths()
	accepts := w.AcceptLengths()
	require.Len(t, accepts, w.Len()-1)
	committed := prefix
	steps := 0
	sim, err := Run(w, func(st Step, sim *Simulator) error {
		checkStepKinds(t, st)
		require.Equal(t, steps, st.Index)
		steps++
		ns, ok := sim.Node(0)
		require.True(t, ok)
		require.Equal(t, committed, ns.Tokens, "step %d: committed tokens", st.Index)
		require.Equal(t, w.Committed(st.Index), committed)
		stats := sim.Stats()
		if st.Index == 0 {
			require.True(t, st.Prefill)
			require.Equal(t, []Query{{Node: 0, Offset: prefix - 1}}, st.Queries)
			require.Equal(t, prefix, stats.Tokens)
			return nil
		}
		require.False(t, st.Prefill)
		require.Len(t, st.Queries, n, "every token-tree token is a query")
		require.Equal(t, 2*n, len(st.Ops))
		require.Equal(t, committed+n, stats.Tokens)
		require.Equal(t, n+1, stats.Nodes)
		// Each token's path: the committed tokens and its ancestors.
		for i, q := range st.Queries {
			if qs, ok := sim.Node(q.Node); !ok || q.Offset != 0 || qs.PathTokens != committed+depths[i]+1 {
				require.Failf(t, "bad query", "step %d query %d: %v, node %+v (live %v), want path %d", st.Index, i, q, qs, ok, committed+depths[i]+1)
			}
		}
		a := accepts[st.Index-1]
		require.GreaterOrEqual(t, a, 1)
		require.LessOrEqual(t, a, len(w.BestPath()))
		acc := st.After[0]
		require.Equal(t, OpAccept, acc.Kind)
		require.Equal(t, 0, acc.Node)
		require.Equal(t, a, acc.Tokens)
		require.Len(t, acc.Path, a)
		for j, id := range acc.Path {
			require.Equal(t, st.Queries[w.BestPath()[j]].Node, id, "accepted path follows the best-first path")
		}
		if trees {
			tr := checkTree(t, sim)
			if st.Index == 1 {
				require.Equal(t, s.TreeWithPrefix(prefix), tr)
			}
			for i := range tr.Queries {
				require.Len(t, tr.QuerySlots(i), committed+depths[i]+1)
			}
		}
		committed += a
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, w.Len(), steps)
	stats := sim.Stats()
	assert.Equal(t, prefix+n*(w.Len()-1), stats.Appended)
	assert.Equal(t, committed-prefix, stats.Committed)
	assert.Equal(t, committed, w.Committed(w.Len()))
	assert.Equal(t, 1+n*(w.Len()-1), stats.Queries)
	assert.Equal(t, committed+n-accepts[len(accepts)-1], stats.PeakTokens, "the last step holds the most")
	assert.Zero(t, stats.Nodes, "everything released")
	assert.Zero(t, stats.Tokens)
	return sim
}

func TestSpeculativeTestdata(t *testing.T) {
	rng := testRNG(t)
	s32 := readSpec(t, testdataPath("APPS_tree_size32_2records.json"))
	require.Len(t, s32.AcceptLengths, 2)
	w, err := NewSpeculative(s32, SpecOptions{})
	require.NoError(t, err)
	assert.Equal(t, "speculative-t32-P1000-r0-S401", w.Name())
	assert.Equal(t, 402, w.Len())
	assert.Equal(t, s32.AcceptLengths[0], w.AcceptLengths(), "no clamping with depth 4")
	assert.Zero(t, w.Clamped())
	require.Len(t, w.BestPath(), 5)
	for j, tok := range w.BestPath()[1:] {
		assert.Equal(t, make([]int, j+1), s32.Paths[tok-1], "best-first path [0], [0 0], ...")
	}
	checkSpeculative(t, s32, w, SpeculativePrefix, true)

	// Steps beyond a record continue with the next one and wrap around.
	prefix := 1 + rng.IntN(3000)
	w, err = NewSpeculative(s32, SpecOptions{Prefix: prefix, Record: 1, Steps: 1000})
	require.NoError(t, err)
	want := append(append(append([]int{}, s32.AcceptLengths[1]...), s32.AcceptLengths[0]...), s32.AcceptLengths[1]...)[:1000]
	assert.Equal(t, want, w.AcceptLengths())
	checkSpeculative(t, s32, w, prefix, false)

	// The 5-path tree is 2 deep: accept lengths above 3 are clamped.
	s5 := readSpec(t, testdataPath("APPS_tree_size5_2records.json"))
	w, err = NewSpeculative(s5, SpecOptions{Prefix: 7})
	require.NoError(t, err)
	assert.Equal(t, []int{0, 1, 5}, w.BestPath())
	clamped := 0
	for k, a := range s5.AcceptLengths[0] {
		assert.Equal(t, min(a, 3), w.AcceptLengths()[k])
		if a > 3 {
			clamped++
		}
	}
	assert.Equal(t, clamped, w.Clamped())
	assert.Positive(t, clamped)
	checkSpeculative(t, s5, w, 7, true)
}

// TestSpeculativeSharedWorkloads replays every APPS token tree for 1000
// steps when the shared workload folder is present.
func TestSpeculativeSharedWorkloads(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(sharedWorkload(t, "speculative"), "APPS_tree_size*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		s := readSpec(t, f)
		w, err := NewSpeculative(s, SpecOptions{Steps: 1000})
		require.NoError(t, err)
		sim := checkSpeculative(t, s, w, SpeculativePrefix, false)
		st := sim.Stats()
		t.Logf("%s: %d tokens, best path %d, %d of %d accept lengths clamped, %d committed, peak tokens %d (without sharing %d)",
			filepath.Base(f), s.Size(), len(w.BestPath()), w.Clamped(), len(w.AcceptLengths()), st.Committed, st.PeakTokens, st.PeakUnsharedTokens)
	}
}

func TestSpeculativeErrors(t *testing.T) {
	s, err := ParseSpeculativeJSON([]byte(`{"Tree_Structure": [[0], [1], [0, 0]], "Records": [{"Accept_length": [1, 0, 9]}, {"Accept_length": []}]}`))
	require.NoError(t, err)
	w, err := NewSpeculative(s, SpecOptions{Prefix: 5})
	require.NoError(t, err)
	assert.Equal(t, []int{1, 1, 3}, w.AcceptLengths(), "clamped to [1, 3]")
	assert.Equal(t, 2, w.Clamped())
	checkSpeculative(t, s, w, 5, true)

	cases := []struct {
		name string
		spec *SpecTree
		opts SpecOptions
		msg  string
	}{
		{"nil", nil, SpecOptions{}, "empty token tree"},
		{"negative prefix", s, SpecOptions{Prefix: -1}, "prefix -1"},
		{"no record", s, SpecOptions{Record: 2}, "record 2 does not exist"},
		{"negative record", s, SpecOptions{Record: -1}, "record -1 does not exist"},
		{"empty record", s, SpecOptions{Record: 1}, "record 1 has no accept lengths"},
		{"steps", s, SpecOptions{Steps: -1}, "steps -1"},
		{"too long", s, SpecOptions{Prefix: treeattn.MaxTreeTokens - 3}, "more than the limit"},
		{"no records", &SpecTree{Parents: []int{-1}}, SpecOptions{}, "record 0 does not exist"},
		{"bad parents", &SpecTree{Parents: []int{-1, 1}, Paths: [][]int{{0}}}, SpecOptions{}, "inconsistent token tree"},
		{"bad paths", &SpecTree{Parents: []int{-1, 0}}, SpecOptions{}, "inconsistent token tree"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, err := NewSpeculative(c.spec, c.opts)
			require.Error(t, err)
			assert.Nil(t, w)
			assert.Contains(t, err.Error(), c.msg)
		})
	}
}

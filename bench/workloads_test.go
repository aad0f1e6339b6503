package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/replay"
	"github.com/deft-vk/deft/treeattn"
)

// testSource reads the cut-down copies of the shared workload files in
// testdata/workloads (see its README).
var testSource = Source{Dir: filepath.Join("testdata", "workloads")}

func TestSampleIndices(t *testing.T) {
	assert.Equal(t, []int{0, 3, 6, 9}, SampleIndices(10, 4))
	assert.Equal(t, []int{0, 200, 400}, SampleIndices(401, 3))
	assert.Equal(t, []int{0, 1, 2}, SampleIndices(3, 10))
	assert.Equal(t, []int{0, 1, 2, 3, 4}, SampleIndices(5, 0))
	assert.Equal(t, []int{0}, SampleIndices(1, 4))
	assert.Equal(t, []int{0}, SampleIndices(7, 1))
	assert.Empty(t, SampleIndices(0, 4))
	for m := 1; m <= 40; m++ {
		for n := 1; n <= 45; n++ {
			idx := SampleIndices(m, n)
			require.Len(t, idx, min(m, n), "m=%d n=%d", m, n)
			require.Equal(t, 0, idx[0])
			if n > 1 {
				require.Equal(t, m-1, idx[len(idx)-1], "m=%d n=%d: the last step is sampled", m, n)
			}
			for i := 1; i < len(idx); i++ {
				require.Greater(t, idx[i], idx[i-1], "m=%d n=%d: %v", m, n, idx)
			}
		}
	}
}

// sameShape compares node parents, token counts and queries.
func sameShape(t *testing.T, want, got *treeattn.Tree) {
	t.Helper()
	require.Len(t, got.Nodes, len(want.Nodes))
	for i := range want.Nodes {
		assert.Equal(t, want.Nodes[i].Parent, got.Nodes[i].Parent, "node %d", i)
		assert.Equal(t, want.Nodes[i].Tokens, got.Nodes[i].Tokens, "node %d", i)
	}
	assert.Equal(t, want.Queries, got.Queries)
}

func TestSampleFewShot(t *testing.T) {
	s, err := Sample("tiny", "3 branches", func() (replay.Workload, error) { return replay.NewFewShot(10, 3, 8) }, 3, LayoutContiguous)
	require.NoError(t, err)
	assert.Equal(t, 8, s.DecodeSteps)
	assert.Equal(t, 1, s.Prefills)
	require.Len(t, s.Steps, 3)
	for i, decode := range []int{0, 4, 7} {
		st := s.Steps[i]
		assert.Equal(t, decode, st.Decode)
		assert.Equal(t, decode+1, st.Step, "step 0 is the prefill")
		// After step s the few-shot tree is FewShotTree(P, b, s).
		sameShape(t, treeattn.FewShotTree(10, 3, st.Step), st.Tree)
		require.NoError(t, st.Tree.Validate(st.Tree.NumSlots()))
		// Plan time is of the next step: the replay's next step, or for
		// the last one every branch + 1 (NextStep, which keeps the
		// slots). The contiguous layout renumbers slots every step, so
		// only that one extends its step.
		require.NotNil(t, st.Next)
		sameShape(t, treeattn.FewShotTree(10, 3, st.Step+1), st.Next)
		assert.Equal(t, i == 2, st.NextExtends)
		assert.Equal(t, st.NextExtends, treeattn.Extends(st.Tree, st.Next))
	}

	all, err := Sample("tiny", "", func() (replay.Workload, error) { return replay.NewFewShot(10, 3, 8) }, 0, LayoutContiguous)
	require.NoError(t, err)
	assert.Len(t, all.Steps, 8)

	_, err = Sample("broken", "", func() (replay.Workload, error) { return replay.NewFewShot(0, 3, 8) }, 3, LayoutContiguous)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "workload broken")
}

func TestSnapshots(t *testing.T) {
	for _, tc := range []struct {
		name            string
		queries, tokens int
	}{
		// The Targets table of issue 5.
		{"fewshot-b50", 50, 24000},
		{"fewshot-b20", 20, 12000},
		{"spec-star-256", 256, 1256},
		{"sorting", 91, 34310},
	} {
		tr, err := FindSnapshot(tc.name, testSource)
		require.NoError(t, err, tc.name)
		assert.Len(t, tr.Queries, tc.queries, tc.name)
		assert.Equal(t, tc.tokens, tr.TotalTokens(), tc.name)
		require.NoError(t, tr.Validate(tr.NumSlots()), tc.name)
	}
	_, err := FindSnapshot("nope", testSource)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "sorting")
}

func TestSortingSnapshotIsFullTree(t *testing.T) {
	rt, err := testSource.ReasoningTree(SortingFile)
	require.NoError(t, err)
	assert.False(t, rt.Incompleted)
	assert.Equal(t, "sorting128ToT#1", rt.Name, "tree 0 of the trace is incomplete; tree 1 is the first complete one")
	tr, err := FullTree(rt)
	require.NoError(t, err)
	assert.Len(t, tr.Nodes, len(rt.Nodes))
	assert.Equal(t, rt.TotalTokens(), tr.TotalTokens())
	assert.Equal(t, 1104, tr.Nodes[0].Tokens, "the root is the prompt")
	children := tr.Children()
	queried := map[int]bool{}
	for _, q := range tr.Queries {
		assert.Empty(t, children[q.Node], "query on node %d, which is not a leaf", q.Node)
		assert.Equal(t, tr.Nodes[q.Node].Tokens-1, q.Offset, "a query sits at its leaf's last token")
		queried[q.Node] = true
	}
	for _, l := range tr.Leaves() {
		assert.True(t, queried[l], "leaf %d has no query", l)
	}
	// Depth-first order: node p's subtree is nodes p .. p+size[p]-1.
	size := make([]int, len(tr.Nodes))
	for i := len(tr.Nodes) - 1; i >= 0; i-- {
		size[i]++
		if i > 0 {
			size[tr.Nodes[i].Parent] += size[i]
		}
	}
	assert.Equal(t, len(tr.Nodes), size[0])
	for i, n := range tr.Nodes[1:] {
		assert.True(t, n.Parent < i+1 && i+1 < n.Parent+size[n.Parent], "node %d lies outside its parent %d's subtree", i+1, n.Parent)
	}
}

func TestSourceFileMissing(t *testing.T) {
	dir := t.TempDir()
	_, err := Source{Dir: dir}.File(SortingFile)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--workloads "+dir)

	// No folder given: the search names where it looked and how to fix it.
	t.Chdir(dir)
	exe := executable
	t.Cleanup(func() { executable = exe })
	executable = func() (string, error) { return filepath.Join(dir, "bin", "deft"), nil }
	_, err = Source{}.File(SortingFile)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(filepath.Dir(dir), "shared", "workloads"))
	assert.Contains(t, err.Error(), "pass --workloads DIR")

	_, err = FindSnapshot("sorting", Source{Dir: dir})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tree sorting")
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	require.NoError(t, os.WriteFile(dst, b, 0o644))
}

func TestSourceFindsSharedNextToRepo(t *testing.T) {
	src, err := filepath.Abs(filepath.Join(testSource.Dir, filepath.FromSlash(SortingFile)))
	require.NoError(t, err)
	top := t.TempDir()
	repo := filepath.Join(top, "checkout")
	require.NoError(t, os.MkdirAll(filepath.Join(repo, "cmd", "deft"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(repo, "go.mod"), []byte("module "+Module+"\n\ngo 1.26\n"), 0o644))
	shared := filepath.Join(top, "shared", "workloads")
	copyFile(t, src, filepath.Join(shared, filepath.FromSlash(SortingFile)))

	assert.Equal(t, repo, RepoRoot(filepath.Join(repo, "cmd", "deft")))
	exe := executable
	t.Cleanup(func() { executable = exe })
	t.Chdir(filepath.Join(repo, "cmd", "deft"))
	executable = func() (string, error) { return filepath.Join(top, "elsewhere", "deft"), nil }
	p, err := Source{}.File(SortingFile)
	require.NoError(t, err, "found from the repository above the working directory")
	assert.Equal(t, filepath.Join(shared, filepath.FromSlash(SortingFile)), p)
	tr, err := FindSnapshot("sorting", Source{})
	require.NoError(t, err)
	assert.Len(t, tr.Queries, 91)

	// From elsewhere, with the executable in the checkout (e.g. .bin/deft).
	t.Chdir(top)
	executable = func() (string, error) { return filepath.Join(repo, ".bin", "deft"), nil }
	p, err = Source{}.File(SortingFile)
	require.NoError(t, err, "found from the repository above the executable")
	assert.Equal(t, filepath.Join(shared, filepath.FromSlash(SortingFile)), p)
	assert.Contains(t, WorkloadDirs(), shared)

	// Another module's go.mod does not count as this repository.
	other := filepath.Join(top, "other")
	require.NoError(t, os.MkdirAll(other, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/other\n"), 0o644))
	assert.Equal(t, "", RepoRoot(other))
}

func TestWorkloads(t *testing.T) {
	assert.Equal(t, []string{"fewshot-b20", "fewshot-b30", "fewshot-b50", "sorting", "set", "spec-32", "spec-64", "spec-128", "spec-256"}, WorkloadNames())
	for _, tc := range []struct {
		name        string
		decodeSteps int
		queries     []int // per sampled step, when known
	}{
		{"fewshot-b20", 400, []int{20, 20, 20, 20}},
		{"fewshot-b50", 400, []int{50, 50, 50, 50}},
		{"sorting", 3708, nil},
		{"set", 363, nil},
		{"spec-32", 401, []int{32, 32, 32, 32}},
	} {
		def, err := FindWorkload(tc.name)
		require.NoError(t, err)
		s, err := SampleWorkload(def, testSource, 4, LayoutContiguous)
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.decodeSteps, s.DecodeSteps, tc.name)
		assert.Equal(t, 1, s.Prefills, tc.name)
		require.Len(t, s.Steps, 4, tc.name)
		assert.Equal(t, 0, s.Steps[0].Decode)
		assert.Equal(t, tc.decodeSteps-1, s.Steps[3].Decode)
		for i, st := range s.Steps {
			require.NoError(t, st.Tree.Validate(st.Tree.NumSlots()), "%s step %d", tc.name, st.Step)
			if tc.queries != nil {
				assert.Len(t, st.Tree.Queries, tc.queries[i], "%s step %d", tc.name, st.Step)
			}
		}
	}
	// The last few-shot step is the b=20 snapshot tree.
	def, _ := FindWorkload("fewshot-b20")
	s, err := SampleWorkload(def, testSource, 2, LayoutContiguous)
	require.NoError(t, err)
	snap, err := FindSnapshot("fewshot-b20", testSource)
	require.NoError(t, err)
	sameShape(t, snap, s.Steps[1].Tree)

	// spec-64's file is not in testdata.
	def, _ = FindWorkload("spec-64")
	_, err = SampleWorkload(def, testSource, 4, LayoutContiguous)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "APPS_tree_size64.json")

	_, err = FindWorkload("fewshot-b40")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "fewshot-b30")

	_, err = Source{Dir: testSource.Dir, TraceTree: 5}.ReasoningTree(SortingFile)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1 complete trees")
}

// TestSamplePagedLayout replays workloads onto a KV pool: the sampled trees
// have the contiguous layout's queries and path lengths, over the pool's
// slots, where every branch of the few-shot tree starts on a fresh page.
func TestSamplePagedLayout(t *testing.T) {
	pathLengths := func(tr *treeattn.Tree) []int {
		out := make([]int, len(tr.Queries))
		for q := range tr.Queries {
			out[q] = len(tr.QuerySlots(q))
		}
		return out
	}
	for _, name := range []string{"fewshot-b20", "sorting", "spec-32"} {
		def, err := FindWorkload(name)
		require.NoError(t, err)
		flat, err := SampleWorkload(def, testSource, 4, LayoutContiguous)
		require.NoError(t, err, name)
		paged, err := SampleWorkload(def, testSource, 4, LayoutPaged)
		require.NoError(t, err, name)
		assert.Equal(t, flat.DecodeSteps, paged.DecodeSteps, name)
		require.Len(t, paged.Steps, len(flat.Steps), name)
		for i, st := range paged.Steps {
			assert.Equal(t, flat.Steps[i].Step, st.Step, name)
			assert.Equal(t, flat.Steps[i].Decode, st.Decode, name)
			require.NoError(t, st.Tree.Validate(st.Tree.NumSlots()), "%s step %d", name, st.Step)
			assert.Equal(t, pathLengths(flat.Steps[i].Tree), pathLengths(st.Tree), "%s step %d", name, st.Step)
			assert.Equal(t, flat.Steps[i].Tree.TotalTokens(), st.Tree.TotalTokens(), "%s step %d", name, st.Step)
			// kvpool's Layout says whether the next step extends this one;
			// it agrees with a comparison of the trees.
			require.NotNil(t, st.Next, name)
			require.NoError(t, st.Next.Validate(st.Next.NumSlots()), "%s step %d", name, st.Step)
			assert.Equal(t, treeattn.Extends(st.Tree, st.Next), st.NextExtends, "%s step %d", name, st.Step)
			if strings.HasPrefix(name, "fewshot") {
				assert.True(t, st.NextExtends, "%s step %d: few-shot steps append", name, st.Step)
			}
		}
	}
	def, _ := FindWorkload("fewshot-b20")
	paged, err := SampleWorkload(def, testSource, 2, LayoutPaged)
	require.NoError(t, err)
	tr := paged.Steps[1].Tree
	branches := 0
	for _, nd := range tr.Nodes {
		if nd.Parent >= 0 {
			branches++
			assert.Zero(t, nd.Slots[0]%kvpool.DefaultPageTokens, "a forked branch starts on a fresh page")
		}
	}
	assert.Equal(t, 20, branches)
}

func TestParseLayout(t *testing.T) {
	for in, want := range map[string]Layout{"": LayoutContiguous, "contiguous": LayoutContiguous, "paged": LayoutPaged} {
		got, err := ParseLayout(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	_, err := ParseLayout("striped")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "paged")
}

// The automatic kernel variant on the H200 (f16 KV, Llama-3-8B, flatten)
// is the faster one measured there for each snapshot: the coopmat item
// classes on all four (session 5: 249, 141, 135 and 346 us against the
// scalar kernel's 326, 157, 286 and 465).
func TestSnapshotsAutoVariantH200(t *testing.T) {
	h200 := treeattn.Limits{SharedMemory: 49152, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{1 << 31, 65535, 65535},
		CoopMat: treeattn.CoopMat{M: 16, N: 16, K: 16, Subgroup: 32}}
	cfg := treeattn.Config{Method: treeattn.MethodFlatten, Shape: treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 128},
		KV: treeattn.KVF16, Limits: h200}
	for name, want := range map[string]string{
		"fewshot-b50":   treeattn.VariantCoopMat,
		"fewshot-b20":   treeattn.VariantCoopMat,
		"spec-star-256": treeattn.VariantCoopMat,
		"sorting":       treeattn.VariantCoopMat,
	} {
		tr, err := FindSnapshot(name, testSource)
		require.NoError(t, err, name)
		p, err := treeattn.NewPlan(tr, cfg)
		require.NoError(t, err, name)
		assert.Equal(t, want, p.Variant, name)
	}
}

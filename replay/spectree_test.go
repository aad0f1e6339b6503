package replay

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/treeattn"
)

func readSpecFile(t *testing.T, path string) *SpecTree {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	s, err := ParseSpeculativeJSON(data)
	require.NoError(t, err, path)
	return s
}

// checkSpecTree checks the structure of s and of its attention tree.
func checkSpecTree(t *testing.T, s *SpecTree, prefix int) {
	t.Helper()
	require.Len(t, s.Parents, len(s.Paths)+1)
	require.Equal(t, -1, s.Parents[0])
	depths := s.Depths()
	for i := 1; i < s.Size(); i++ {
		p := s.Parents[i]
		require.True(t, p >= 0 && p < i, "token %d parent %d", i, p)
		path := s.Paths[i-1]
		require.Equal(t, len(path), depths[i])
		if len(path) > 1 {
			require.Equal(t, path[:len(path)-1], s.Paths[p-1])
		} else {
			require.Equal(t, 0, p)
		}
	}
	tr := s.TreeWithPrefix(prefix)
	require.NotNil(t, tr)
	require.NoError(t, tr.Validate(tr.NumSlots()))
	require.Len(t, tr.Nodes, s.Size()+1)
	require.Len(t, tr.Queries, s.Size())
	require.Equal(t, prefix+s.Size(), tr.NumSlots())
	want := 0
	for i := range s.Parents {
		want += prefix + depths[i] + 1
		slots := tr.QuerySlots(i)
		require.Len(t, slots, prefix+depths[i]+1)
		// The query sees the prefix, then its token-tree ancestors, then
		// itself.
		require.Equal(t, int32(prefix-1), slots[prefix-1])
		require.Equal(t, int32(prefix), slots[prefix], "token-tree root follows the prefix")
		require.Equal(t, int32(prefix+i), slots[len(slots)-1])
	}
	require.Equal(t, want, tr.SumPathLengths())
}

func TestParseSpeculativeTestdata(t *testing.T) {
	rng := gputest.Rand(t)
	s5 := readSpecFile(t, filepath.Join("testdata", "deft", "APPS_tree_size5.json"))
	assert.Equal(t, "0", s5.TreeID)
	assert.Equal(t, 5, s5.DeclaredSize)
	assert.Equal(t, [][]int{{0}, {1}, {2}, {3}, {0, 0}}, s5.Paths)
	assert.Equal(t, []int{-1, 0, 0, 0, 0, 1}, s5.Parents)
	assert.Equal(t, []int{0, 1, 1, 1, 1, 2}, s5.Depths())
	require.Len(t, s5.AcceptLengths, 20)
	require.Len(t, s5.Prompts, 20)
	require.Len(t, s5.AvgAcceptLengths, 20)
	for r, acc := range s5.AcceptLengths {
		require.NotEmpty(t, acc)
		sum := 0
		for _, a := range acc {
			sum += a
		}
		assert.InDelta(t, s5.AvgAcceptLengths[r], float64(sum)/float64(len(acc)), 1e-9, "record %d", r)
		assert.NotEmpty(t, s5.Prompts[r])
	}
	checkSpecTree(t, s5, 1+rng.IntN(1000))

	s32 := readSpecFile(t, filepath.Join("testdata", "deft", "APPS_tree_size32.json"))
	assert.Equal(t, 32, s32.Size())
	assert.Equal(t, 32, s32.DeclaredSize)
	assert.Equal(t, 4, slices.Max(s32.Depths()))
	checkSpecTree(t, s32, 1)
	checkSpecTree(t, s32, 1+rng.IntN(4000))
}

// TestParseSpeculativeSharedWorkloads reads all of DeFT's APPS token trees
// from the shared workload folder next to the repository, when present.
func TestParseSpeculativeSharedWorkloads(t *testing.T) {
	dir := filepath.Join("..", "..", "shared", "workloads", "deft", "speculative")
	files, err := filepath.Glob(filepath.Join(dir, "APPS_tree_size*.json"))
	require.NoError(t, err)
	if len(files) == 0 {
		t.Skipf("no shared workloads in %s", dir)
	}
	rng := gputest.Rand(t)
	for _, f := range files {
		s := readSpecFile(t, f)
		checkSpecTree(t, s, 1+rng.IntN(2000))
		if strings.HasSuffix(f, "size5.json") {
			assert.Equal(t, s.DeclaredSize+1, s.Size(), f)
		} else {
			assert.Equal(t, s.DeclaredSize, s.Size(), f)
		}
	}
}

func TestParseSpeculativeJSONVariants(t *testing.T) {
	s, err := ParseSpeculativeJSON([]byte(`{"Tree_ID": "apps-7", "Token_Tree_size": "3", "Tree_Structure": [[0], [0, 0]], "Extra": 1}`))
	require.NoError(t, err)
	assert.Equal(t, "apps-7", s.TreeID)
	assert.Equal(t, 3, s.DeclaredSize)
	assert.Equal(t, []int{-1, 0, 1}, s.Parents)
	assert.Nil(t, s.AcceptLengths)

	s, err = ParseSpeculativeJSON([]byte(`{"Tree_Structure": []}`))
	require.NoError(t, err)
	assert.Equal(t, 1, s.Size())
	tr := s.TreeWithPrefix(4)
	require.NotNil(t, tr)
	require.NoError(t, tr.Validate(tr.NumSlots()))
	assert.Equal(t, []treeattn.Query{{Node: 1, Offset: 0}}, tr.Queries)
	assert.Nil(t, s.TreeWithPrefix(0))

	broken := &SpecTree{Parents: []int{-1, 1}}
	assert.Nil(t, broken.TreeWithPrefix(1))
	assert.Equal(t, []int{0, -1}, broken.Depths())
}

func TestParseSpeculativeJSONErrors(t *testing.T) {
	cases := []struct{ name, doc, msg string }{
		{"empty", ``, "EOF"},
		{"missing structure", `{"Tree_ID": 1}`, `missing "Tree_Structure"`},
		{"prefix missing", `{"Tree_Structure": [[0], [1, 0]]}`, "prefix [1] is not listed before it"},
		{"prefix later", `{"Tree_Structure": [[0, 0], [0]]}`, "prefix [0] is not listed before it"},
		{"duplicate", `{"Tree_Structure": [[0], [0]]}`, "appears twice"},
		{"negative", `{"Tree_Structure": [[0], [0, -1]]}`, "negative entry"},
		{"empty path", `{"Tree_Structure": [[0], []]}`, "Tree_Structure[1] is empty"},
		{"not ints", `{"Tree_Structure": [[0.5]]}`, "cannot unmarshal"},
		{"trailing", `{"Tree_Structure": [[0]]} []`, "after the JSON value"},
		{"bad id", `{"Tree_ID": {}, "Tree_Structure": [[0]]}`, "Tree_ID"},
		{"bad size", `{"Token_Tree_size": "big", "Tree_Structure": [[0]]}`, "Token_Tree_size"},
		{"fraction size", `{"Token_Tree_size": 2.5, "Tree_Structure": [[0]]}`, "Token_Tree_size"},
		{"negative accept", `{"Tree_Structure": [[0]], "Records": [{"prompt": "p", "Accept_length": [1, -2]}]}`, "Accept_length[1] = -2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := ParseSpeculativeJSON([]byte(c.doc))
			require.Error(t, err)
			assert.Nil(t, s)
			assert.Contains(t, err.Error(), c.msg)
			assert.True(t, strings.HasPrefix(err.Error(), "parse speculative tree json: "))
		})
	}
}

// FuzzParseSpeculativeJSON checks that parsing never panics and that every
// accepted token tree yields a consistent parent array and a valid
// attention tree.
func FuzzParseSpeculativeJSON(f *testing.F) {
	f.Add([]byte(`{"Tree_ID": 0, "Tree_Structure": [[0], [1], [2], [3], [0, 0]], "Token_Tree_size": 5, "Records": [{"prompt": "x", "Accept_length": [1, 4], "Avg_accept_length": 2.5}]}`))
	f.Add([]byte(`{"Tree_ID": "a", "Token_Tree_size": "3", "Tree_Structure": [[0], [0, 0], [0, 0, 0], [0, 1]]}`))
	f.Add([]byte(`{"Tree_Structure": [[0], [1, 0]]}`))
	f.Add([]byte(`{"Tree_Structure": [[0], [0]]}`))
	f.Add([]byte(`{"Tree_Structure": []}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	// The structure of a real file without its long prompts, which would
	// make the fuzzer's input minimization slow.
	if data, err := os.ReadFile(filepath.Join("testdata", "deft", "APPS_tree_size32.json")); err == nil {
		if s, err := ParseSpeculativeJSON(data); err == nil {
			small, err := json.Marshal(map[string]any{"Tree_ID": 0, "Token_Tree_size": 32, "Tree_Structure": s.Paths})
			if err == nil {
				f.Add(small)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSpeculativeJSON(data)
		if err != nil {
			require.Nil(t, s)
			return
		}
		require.Len(t, s.Parents, len(s.Paths)+1)
		require.Equal(t, -1, s.Parents[0])
		for i := 1; i < len(s.Parents); i++ {
			require.True(t, s.Parents[i] >= 0 && s.Parents[i] < i)
		}
		for _, d := range s.Depths() {
			require.GreaterOrEqual(t, d, 0)
		}
		tr := s.TreeWithPrefix(3)
		require.NotNil(t, tr)
		require.NoError(t, tr.Validate(tr.NumSlots()))
		require.Len(t, tr.Queries, s.Size())
	})
}

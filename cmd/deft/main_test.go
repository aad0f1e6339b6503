package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/urfave/cli/v2"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/internal/npy"
	"github.com/deft-vk/deft/probe"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// deft runs the app in-process and returns what it wrote. A panic fails the
// test instead of crashing the test binary.
func runDeft(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := newApp()
	app.Writer = &out
	app.ErrWriter = &errOut
	require.NotPanics(t, func() { err = app.Run(append([]string{"deft"}, args...)) }, "deft %q", args)
	return out.String(), errOut.String(), err
}

// TestMain points the user cache dir, where the commands keep their pipeline
// caches (and probe results), at a temporary directory shared by the tests:
// nothing is written to the real one, and kernels compiled by one command
// are not compiled again by the next (on lavapipe compiling dominates).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "deft-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_CACHE_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// setupCLITest opens the shared validated test device, which loads libvulkan
// and sets up the validation message collection for the process.
func setupCLITest(t *testing.T) *vk.Device {
	t.Helper()
	return gputest.Device(t)
}

func testRandn(rng *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(rng.NormFloat64())
	}
	return out
}

func testWriteNpyF32(t *testing.T, path string, shape []int, data []float32) string {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, npy.Write(f, shape, data))
	require.NoError(t, f.Close())
	return path
}

func testWriteNpyF16(t *testing.T, path string, shape []int, data []uint16) string {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, npy.WriteF16(f, shape, data))
	require.NoError(t, f.Close())
	return path
}

func testReadNpy(t *testing.T, path string) *npy.Array {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	a, err := npy.Read(f)
	require.NoError(t, err)
	return a
}

func testWriteTree(t *testing.T, path string, tree *treeattn.Tree) string {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, treeattn.WriteTreeJSON(f, tree))
	require.NoError(t, f.Close())
	return path
}

func TestDevices(t *testing.T) {
	d := setupCLITest(t)

	out, _, err := runDeft(t, "devices", "--validation")
	require.NoError(t, err)
	assert.Contains(t, out, d.Info.Name)
	assert.Contains(t, out, "(selected)")
	assert.Regexp(t, `subgroup size\s+[1-9]`, out)
	assert.Contains(t, out, "shared memory")

	out, _, err = runDeft(t, "devices", "--json", "--validation")
	require.NoError(t, err)
	var doc struct {
		Selected int             `json:"selected"`
		Devices  []vk.DeviceInfo `json:"devices"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc), "output:\n%s", out)
	require.NotEmpty(t, doc.Devices)
	require.True(t, doc.Selected >= 0 && doc.Selected < len(doc.Devices), "selected %d of %d devices", doc.Selected, len(doc.Devices))
	sel := doc.Devices[doc.Selected]
	assert.NotEmpty(t, sel.Name)
	assert.NotZero(t, sel.SubgroupSize)
	assert.Equal(t, d.Info.Name, sel.Name)
	assert.Equal(t, d.Info.UUID, sel.UUID)
	for i, dev := range doc.Devices {
		assert.Equal(t, i, dev.Index)
		assert.NotEmpty(t, dev.Name)
	}

	// --json must not leak into the next app built by newApp (the flags are
	// package-level values).
	out, _, err = runDeft(t, "devices")
	require.NoError(t, err)
	assert.False(t, strings.HasPrefix(strings.TrimSpace(out), "{"), "plain `devices` after `devices --json` printed JSON:\n%s", out)

	// Selecting by index and by name substring.
	out, _, err = runDeft(t, "devices", "--device", strconv.Itoa(doc.Selected))
	require.NoError(t, err)
	assert.Contains(t, out, fmt.Sprintf("[%d] %s  (selected)", doc.Selected, sel.Name))
	_, _, err = runDeft(t, "devices", "--device", strconv.Itoa(len(doc.Devices)+7))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "out of range")
	_, _, err = runDeft(t, "devices", "--device", "no-such-gpu-xyzzy")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `no device name contains "no-such-gpu-xyzzy"`)
}

// testAttnFiles are a random attention problem written to a directory.
type testAttnFiles struct {
	dir, tree, q, k, v string
	t                  *treeattn.Tree
	shape              treeattn.Shape
	// q, k and v exactly as the command reads them (f16 files rounded).
	qv, kv, vv []float32
}

func newTestAttnFiles(t *testing.T, rng *rand.Rand, f16 bool) *testAttnFiles {
	t.Helper()
	dir := t.TempDir()
	tree := treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 7, MaxNodeTokens: 24, MaxQueries: 8,
		Kind: treeattn.TreeKind(rng.IntN(3)), ShuffleSlots: true})
	// Shapes of the conformance suite, so TestConformanceCommand finds these
	// kernels compiled in the pipeline cache: GQA 1 or 4 over 2 KV heads.
	shape := treeattn.Shape{QHeads: []int{2, 8}[rng.IntN(2)], KVHeads: 2, HeadDim: []int{64, 128, 256}[rng.IntN(3)]}
	slots := tree.NumSlots() + rng.IntN(4) // K/V may hold unused slots
	nq := len(tree.Queries)
	a := &testAttnFiles{dir: dir, t: tree, shape: shape}
	a.tree = testWriteTree(t, filepath.Join(dir, "tree.json"), tree)
	qShape := []int{nq, shape.QHeads, shape.HeadDim}
	kvShape := []int{slots, shape.KVHeads, shape.HeadDim}
	a.qv = testRandn(rng, nq*shape.QHeads*shape.HeadDim)
	a.kv = testRandn(rng, slots*shape.KVHeads*shape.HeadDim)
	a.vv = testRandn(rng, slots*shape.KVHeads*shape.HeadDim)
	if f16 {
		// Q in float16 too, which the command also accepts.
		qb, kb, vb := half.FromFloat32Slice(a.qv), half.FromFloat32Slice(a.kv), half.FromFloat32Slice(a.vv)
		a.qv, a.kv, a.vv = half.ToFloat32Slice(qb), half.ToFloat32Slice(kb), half.ToFloat32Slice(vb)
		a.q = testWriteNpyF16(t, filepath.Join(dir, "q.npy"), qShape, qb)
		a.k = testWriteNpyF16(t, filepath.Join(dir, "k.npy"), kvShape, kb)
		a.v = testWriteNpyF16(t, filepath.Join(dir, "v.npy"), kvShape, vb)
	} else {
		a.q = testWriteNpyF32(t, filepath.Join(dir, "q.npy"), qShape, a.qv)
		a.k = testWriteNpyF32(t, filepath.Join(dir, "k.npy"), kvShape, a.kv)
		a.v = testWriteNpyF32(t, filepath.Join(dir, "v.npy"), kvShape, a.vv)
	}
	t.Logf("tree: %d nodes, %d tokens, %d queries, %d K/V slots; shape %+v; f16 %v", len(tree.Nodes), tree.TotalTokens(), nq, slots, shape, f16)
	return a
}

func TestAttentionMatchesReference(t *testing.T) {
	setupCLITest(t)
	rng := gputest.Rand(t)
	for _, tc := range []struct {
		name string
		f16  bool
		tol  float64
	}{{"f32", false, 1e-5}, {"f16", true, 2e-3}} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTestAttnFiles(t, rng, tc.f16)
			scale := a.shape.DefaultScale()
			var scaleArgs []string
			if !tc.f16 {
				// An explicit --scale on the f32 case, the default on the f16 one.
				scale = 0.02 + 0.2*rng.Float64()
				scaleArgs = []string{"--scale", strconv.FormatFloat(scale, 'g', -1, 64)}
			}
			want, err := treeattn.Reference(a.t, a.shape, a.qv, a.kv, a.vv, scale)
			require.NoError(t, err)
			for i, m := range treeattn.Methods {
				out := filepath.Join(a.dir, "out-"+string(m)+".npy")
				args := append([]string{"attention", "--validation", "--tree", a.tree, "--q", a.q, "--k", a.k, "--v", a.v,
					"--out", out, "--method", string(m)}, scaleArgs...)
				if i == 0 {
					args = append(args, "--check")
				}
				stdout, stderr, err := runDeft(t, args...)
				require.NoError(t, err, "method %s; stderr:\n%s", m, stderr)
				if i == 0 {
					match := regexp.MustCompile(`relative L2 error against the float64 reference: (\S+)`).FindStringSubmatch(stdout)
					require.NotNil(t, match, "--check printed no error figure:\n%s", stdout)
					checked, err := strconv.ParseFloat(match[1], 64)
					require.NoError(t, err)
					assert.LessOrEqual(t, checked, tc.tol, "--check's own figure")
				}
				got := testReadNpy(t, out)
				assert.Equal(t, npy.Float32, got.DType)
				require.Equal(t, []int{len(a.t.Queries), a.shape.QHeads, a.shape.HeadDim}, got.Shape, "method %s", m)
				rel := treeattn.RelativeL2(got.F32, want)
				t.Logf("%s %s: relative L2 %.3g", m, tc.name, rel)
				assert.LessOrEqual(t, rel, tc.tol, "method %s", m)
			}
		})
	}
}

// testBadInputs is a small valid problem whose files the error cases replace one
// at a time.
type testBadInputs struct {
	dir, tree, q, k, v string
}

const testBaseTree = `{"nodes": [{"parent": -1, "tokens": 5}, {"parent": 0, "tokens": 3}, {"parent": 0, "tokens": 2}],
 "queries": [{"node": 1, "offset": 2}, {"node": 2, "offset": 1}, {"node": 0, "offset": 4}]}`

// Shape of the base problem: 3 queries, 8 query heads, 2 KV heads, dim 64
// (a conformance suite shape), 10 slots.
const (
	tbQueries, tbQHeads, tbKVHeads, tbDim, tbSlots = 3, 8, 2, 64, 10
)

func testWriteFile(t *testing.T, path, content string) string {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	return path
}

func newTestBadInputs(t *testing.T, rng *rand.Rand) *testBadInputs {
	dir := t.TempDir()
	return &testBadInputs{
		dir:  dir,
		tree: testWriteFile(t, filepath.Join(dir, "tree.json"), testBaseTree),
		q:    testWriteNpyF32(t, filepath.Join(dir, "q.npy"), []int{tbQueries, tbQHeads, tbDim}, testRandn(rng, tbQueries*tbQHeads*tbDim)),
		k:    testWriteNpyF32(t, filepath.Join(dir, "k.npy"), []int{tbSlots, tbKVHeads, tbDim}, testRandn(rng, tbSlots*tbKVHeads*tbDim)),
		v:    testWriteNpyF32(t, filepath.Join(dir, "v.npy"), []int{tbSlots, tbKVHeads, tbDim}, testRandn(rng, tbSlots*tbKVHeads*tbDim)),
	}
}

func TestAttentionBadInputs(t *testing.T) {
	setupCLITest(t)
	rng := gputest.Rand(t)

	// The unmodified problem runs, so every error below comes from its one change.
	base := newTestBadInputs(t, rng)
	out := filepath.Join(base.dir, "out.npy")
	_, stderr, err := runDeft(t, "attention", "--validation", "--tree", base.tree, "--q", base.q, "--k", base.k, "--v", base.v, "--out", out)
	require.NoError(t, err, stderr)
	tree, err := treeattn.ParseTreeJSON([]byte(testBaseTree))
	require.NoError(t, err)
	q, k, v := testReadNpy(t, base.q), testReadNpy(t, base.k), testReadNpy(t, base.v)
	want, err := treeattn.Reference(tree, treeattn.Shape{QHeads: tbQHeads, KVHeads: tbKVHeads, HeadDim: tbDim}, q.F32, k.F32, v.F32, 1/math.Sqrt(tbDim))
	require.NoError(t, err)
	assert.LessOrEqual(t, treeattn.RelativeL2(testReadNpy(t, out).F32, want), 1e-5)

	nanAt := func(n int) []float32 {
		x := testRandn(rng, n)
		x[rng.IntN(n)] = float32(math.NaN())
		return x
	}
	cases := []struct {
		name   string
		modify func(b *testBadInputs)
		extra  []string
		want   []string
	}{
		{name: "cycle", modify: func(b *testBadInputs) {
			testWriteFile(t, b.tree, `{"nodes": [{"parent": -1, "tokens": 2}, {"parent": 2, "tokens": 1}, {"parent": 1, "tokens": 1}],
			 "queries": [{"node": 0, "offset": 0}]}`)
		}, want: []string{"node 1: cycle through nodes 1, 2"}},
		{name: "own parent", modify: func(b *testBadInputs) {
			testWriteFile(t, b.tree, `{"nodes": [{"parent": -1, "tokens": 5}, {"parent": 1, "tokens": 5}]}`)
		}, want: []string{"node 1: cycle: the node is its own parent"}},
		{name: "missing parent", modify: func(b *testBadInputs) {
			testWriteFile(t, b.tree, `{"nodes": [{"parent": -1, "tokens": 5}, {"parent": 0, "tokens": 3}, {"parent": 9, "tokens": 2}]}`)
		}, want: []string{"node 2: missing parent 9"}},
		{name: "parent after child", modify: func(b *testBadInputs) {
			testWriteFile(t, b.tree, `{"nodes": [{"parent": -1, "tokens": 5}, {"parent": 2, "tokens": 3}, {"parent": 0, "tokens": 2}]}`)
		}, want: []string{"node 1: parent 2 comes after it", "topological order"}},
		{name: "two roots", modify: func(b *testBadInputs) {
			testWriteFile(t, b.tree, `{"nodes": [{"parent": -1, "tokens": 5}, {"parent": -1, "tokens": 5}]}`)
		}, want: []string{"several roots"}},
		{name: "query offset outside node", modify: func(b *testBadInputs) {
			testWriteFile(t, b.tree, strings.Replace(testBaseTree, `{"node": 1, "offset": 2}`, `{"node": 1, "offset": 3}`, 1))
		}, want: []string{"query 0: offset 3 outside node 1, which has 3 tokens"}},
		{name: "query node missing", modify: func(b *testBadInputs) {
			testWriteFile(t, b.tree, strings.Replace(testBaseTree, `{"node": 2, "offset": 1}`, `{"node": 3, "offset": 0}`, 1))
		}, want: []string{"query 1: node 3 does not exist"}},
		{name: "empty queries", modify: func(b *testBadInputs) {
			testWriteFile(t, b.tree, `{"nodes": [{"parent": -1, "tokens": 5}], "queries": []}`)
		}, want: []string{"tree has no queries"}},
		{name: "unknown JSON field", modify: func(b *testBadInputs) {
			testWriteFile(t, b.tree, `{"nodes": [{"parent": -1, "tokens": 5, "tokenz": 2}]}`)
		}, want: []string{`unknown field "tokenz"`}},
		{name: "duplicate slot", modify: func(b *testBadInputs) {
			testWriteFile(t, b.tree, `{"nodes": [{"parent": -1, "tokens": 2, "slots": [3, 4]}, {"parent": 0, "tokens": 2, "slots": [5, 3]}]}`)
		}, want: []string{"slot 3 is used twice"}},
		{name: "slot beyond K", modify: func(b *testBadInputs) {
			// Explicit slots up to 12; K and V hold 10.
			testWriteFile(t, b.tree, `{"nodes": [{"parent": -1, "tokens": 3, "slots": [0, 12, 1]}, {"parent": 0, "tokens": 2, "slots": [2, 3]}],
			 "queries": [{"node": 1, "offset": 1}, {"node": 0, "offset": 2}, {"node": 1, "offset": 0}]}`)
		}, want: []string{"the tree uses slot 12 but K/V hold 10 slots"}},
		{name: "K one slot short", modify: func(b *testBadInputs) {
			testWriteNpyF32(t, b.k, []int{tbSlots - 1, tbKVHeads, tbDim}, testRandn(rng, (tbSlots-1)*tbKVHeads*tbDim))
			testWriteNpyF32(t, b.v, []int{tbSlots - 1, tbKVHeads, tbDim}, testRandn(rng, (tbSlots-1)*tbKVHeads*tbDim))
		}, want: []string{"the tree uses slot 9 but K/V hold 9 slots"}},
		{name: "Q query count", modify: func(b *testBadInputs) {
			testWriteNpyF32(t, b.q, []int{tbQueries + 1, tbQHeads, tbDim}, testRandn(rng, (tbQueries+1)*tbQHeads*tbDim))
		}, want: []string{"Q has 4 queries, the tree 3"}},
		{name: "K and V shapes differ", modify: func(b *testBadInputs) {
			testWriteNpyF32(t, b.v, []int{tbSlots + 1, tbKVHeads, tbDim}, testRandn(rng, (tbSlots+1)*tbKVHeads*tbDim))
		}, want: []string{"K is f4 [10 2 64] but V is f4 [11 2 64]"}},
		{name: "K and V types differ", modify: func(b *testBadInputs) {
			testWriteNpyF16(t, b.v, []int{tbSlots, tbKVHeads, tbDim}, half.FromFloat32Slice(testRandn(rng, tbSlots*tbKVHeads*tbDim)))
		}, want: []string{"K is f4 [10 2 64] but V is f2 [10 2 64]"}},
		{name: "head dims disagree", modify: func(b *testBadInputs) {
			testWriteNpyF32(t, b.q, []int{tbQueries, tbQHeads, 2 * tbDim}, testRandn(rng, tbQueries*tbQHeads*2*tbDim))
		}, want: []string{"Q head dim 128 differs from K's 64"}},
		{name: "q heads not a multiple of kv heads", modify: func(b *testBadInputs) {
			testWriteNpyF32(t, b.q, []int{tbQueries, 3, tbDim}, testRandn(rng, tbQueries*3*tbDim))
		}, want: []string{"q heads 3 not a multiple of kv heads 2"}},
		{name: "Q rank", modify: func(b *testBadInputs) {
			testWriteNpyF32(t, b.q, []int{tbQueries, tbQHeads * tbDim}, testRandn(rng, tbQueries*tbQHeads*tbDim))
		}, want: []string{"must be [query, q_head, dim]"}},
		{name: "truncated K", modify: func(b *testBadInputs) {
			raw, err := os.ReadFile(b.k)
			require.NoError(t, err)
			testWriteFile(t, b.k, string(raw[:len(raw)-1-rng.IntN(100)]))
		}, want: []string{"read K ", "unexpected EOF"}},
		{name: "truncated V header", modify: func(b *testBadInputs) {
			raw, err := os.ReadFile(b.v)
			require.NoError(t, err)
			testWriteFile(t, b.v, string(raw[:20]))
		}, want: []string{"read V", "unexpected EOF"}},
		{name: "Q not npy", modify: func(b *testBadInputs) {
			testWriteFile(t, b.q, "this is not a NumPy file at all")
		}, want: []string{"read Q", "not a .npy file"}},
		{name: "Q missing", modify: func(b *testBadInputs) {
			require.NoError(t, os.Remove(b.q))
		}, want: []string{"read Q", "no such file"}},
		{name: "NaN in Q", modify: func(b *testBadInputs) {
			testWriteNpyF32(t, b.q, []int{tbQueries, tbQHeads, tbDim}, nanAt(tbQueries*tbQHeads*tbDim))
		}, want: []string{"Q element", "is NaN: inputs must be finite"}},
		{name: "Inf in f16 V", modify: func(b *testBadInputs) {
			k := half.FromFloat32Slice(testRandn(rng, tbSlots*tbKVHeads*tbDim))
			v := half.FromFloat32Slice(testRandn(rng, tbSlots*tbKVHeads*tbDim))
			v[rng.IntN(len(v))] = half.PosInf
			testWriteNpyF16(t, b.k, []int{tbSlots, tbKVHeads, tbDim}, k)
			testWriteNpyF16(t, b.v, []int{tbSlots, tbKVHeads, tbDim}, v)
		}, want: []string{"V element", "is +Inf: inputs must be finite"}},
		{name: "negative scale", extra: []string{"--scale=-0.5"}, want: []string{"scale -0.5 must be positive and within float32 range"}},
		{name: "NaN scale", extra: []string{"--scale", "NaN"}, want: []string{"scale NaN must be positive and within float32 range"}},
		{name: "infinite scale", extra: []string{"--scale", "+Inf"}, want: []string{"scale +Inf must be positive and within float32 range"}},
		{name: "scale beyond float32", extra: []string{"--scale", "1e39"}, want: []string{"scale 1e+39 must be positive and within float32 range"}},
		{name: "unknown method", extra: []string{"--method", "bogus"}, want: []string{`unknown attention method "bogus"`, "flatten"}},
		// Rejected by the planner, after the device opened.
		{name: "odd head dim", modify: func(b *testBadInputs) {
			testWriteNpyF32(t, b.q, []int{tbQueries, tbQHeads, 15}, testRandn(rng, tbQueries*tbQHeads*15))
			testWriteNpyF32(t, b.k, []int{tbSlots, tbKVHeads, 15}, testRandn(rng, tbSlots*tbKVHeads*15))
			testWriteNpyF32(t, b.v, []int{tbSlots, tbKVHeads, 15}, testRandn(rng, tbSlots*tbKVHeads*15))
		}, want: []string{"choose tiles: head dim 15 must be"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBadInputs(t, rng)
			if tc.modify != nil {
				tc.modify(b)
			}
			out := filepath.Join(b.dir, "out.npy")
			args := append([]string{"attention", "--validation", "--tree", b.tree, "--q", b.q, "--k", b.k, "--v", b.v, "--out", out}, tc.extra...)
			_, _, err := runDeft(t, args...)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NoFileExists(t, out, "no output may be written for bad inputs")
			assertNoTempFiles(t, b.dir)
		})
	}

	t.Run("missing required flag", func(t *testing.T) {
		b := newTestBadInputs(t, rng)
		_, _, err := runDeft(t, "attention", "--tree", b.tree, "--q", b.q, "--k", b.k, "--v", b.v)
		require.Error(t, err)
		assert.Contains(t, err.Error(), `"out"`)
	})
}

// assertNoTempFiles fails when a failed command left its temporary output
// behind in dir.
func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasSuffix(e.Name(), ".tmp"), "temporary file %s left in %s", e.Name(), dir)
	}
}

// TestAttentionOutCheckedFirst: a bad --out fails before any input is read
// or any device is opened (it used to fail only after the GPU work), and
// --device 99 names the devices there are instead of claiming there is none.
func TestAttentionOutCheckedFirst(t *testing.T) {
	setupCLITest(t)
	rng := gputest.Rand(t)
	b := newTestBadInputs(t, rng)
	args := func(out string, extra ...string) []string {
		return append([]string{"attention", "--validation", "--tree", b.tree, "--q", b.q, "--k", b.k, "--v", b.v, "--out", out}, extra...)
	}
	// The device selection would fail too: the --out error must come first.
	missing := filepath.Join(b.dir, "no-such-dir", "out.npy")
	_, _, err := runDeft(t, args(missing, "--device", "no-such-gpu-xyzzy")...)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--out "+missing)
	assert.Contains(t, err.Error(), "no such file or directory")

	_, _, err = runDeft(t, args(b.dir, "--device", "no-such-gpu-xyzzy")...)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--out "+b.dir+": is a directory")

	out := filepath.Join(b.dir, "out.npy")
	_, _, err = runDeft(t, args(out, "--device", "99")...)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "index 99 out of range")
	assert.Contains(t, err.Error(), gputest.Device(t).Info.Name, "the error lists the devices there are")
	assert.NotContains(t, err.Error(), "no Vulkan device")
	assert.NoFileExists(t, out)
	assertNoTempFiles(t, b.dir)
}

// TestAttentionCheckTolerance: --check states its tolerance and fails above
// it (it used to exit 0 whatever the error); --tol sets it.
func TestAttentionCheckTolerance(t *testing.T) {
	setupCLITest(t)
	rng := gputest.Rand(t)
	b := newTestBadInputs(t, rng)
	out := filepath.Join(b.dir, "out.npy")
	base := []string{"attention", "--validation", "--tree", b.tree, "--q", b.q, "--k", b.k, "--v", b.v, "--out", out, "--check"}

	stdout, stderr, err := runDeft(t, base...)
	require.NoError(t, err, stderr)
	assert.Regexp(t, `relative L2 error against the float64 reference: \S+ \(tolerance 1e-05\)`, stdout, "f32 K/V: conformance's tolerance")

	// No fp32 result is that exact: the check must fail, after writing the output.
	require.NoError(t, os.Remove(out))
	stdout, _, err = runDeft(t, append(base, "--tol", "1e-12")...)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exceeds the tolerance 1e-12 (--tol)")
	assert.Contains(t, stdout, "(tolerance 1e-12)")
	assert.FileExists(t, out, "the output is written before the check fails")

	_, _, err = runDeft(t, append(base, "--tol", "0.5")...)
	require.NoError(t, err)

	for _, bad := range []string{"0", "-1", "NaN", "+Inf"} {
		_, _, err = runDeft(t, append(base, "--tol", bad)...)
		require.Error(t, err, "--tol %s", bad)
		assert.Contains(t, err.Error(), "want a positive finite number")
	}
	_, _, err = runDeft(t, append(base[:len(base)-1], "--tol", "1e-3")...)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "add --check")
}

// TestAttentionScoresBeyondFloat32 is the overflow case: Q and K
// near 1e20 (finite) make scores near 1e40. The output used to be all
// zeros with exit status 0; now it matches the float64 reference and
// --check passes.
func TestAttentionScoresBeyondFloat32(t *testing.T) {
	setupCLITest(t)
	rng := gputest.Rand(t)
	b := newTestBadInputs(t, rng)
	big := func(n int) []float32 {
		x := testRandn(rng, n)
		for i := range x {
			x[i] *= 1e20
		}
		return x
	}
	q, k := big(tbQueries*tbQHeads*tbDim), big(tbSlots*tbKVHeads*tbDim)
	v := testRandn(rng, tbSlots*tbKVHeads*tbDim)
	testWriteNpyF32(t, b.q, []int{tbQueries, tbQHeads, tbDim}, q)
	testWriteNpyF32(t, b.k, []int{tbSlots, tbKVHeads, tbDim}, k)
	testWriteNpyF32(t, b.v, []int{tbSlots, tbKVHeads, tbDim}, v)
	tree, err := treeattn.ParseTreeJSON([]byte(testBaseTree))
	require.NoError(t, err)
	want, err := treeattn.Reference(tree, treeattn.Shape{QHeads: tbQHeads, KVHeads: tbKVHeads, HeadDim: tbDim}, q, k, v, 1/math.Sqrt(tbDim))
	require.NoError(t, err)
	for _, m := range []string{"flatten", "node"} {
		out := filepath.Join(b.dir, "out-"+m+".npy")
		stdout, stderr, err := runDeft(t, "attention", "--validation", "--tree", b.tree, "--q", b.q, "--k", b.k, "--v", b.v,
			"--out", out, "--method", m, "--check")
		require.NoError(t, err, "%s: %s", m, stderr)
		assert.Contains(t, stdout, "relative L2 error")
		got := testReadNpy(t, out).F32
		rel := treeattn.RelativeL2(got, want)
		t.Logf("%s: relative L2 %.3g", m, rel)
		assert.LessOrEqual(t, rel, 1e-5, m)
	}
}

func TestConformanceCommand(t *testing.T) {
	setupCLITest(t)
	rng := gputest.Rand(t)
	seed := rng.Uint64() >> 1
	stdout, stderr, err := runDeft(t, "conformance", "--validation", "--method", "flatten", "--seed", strconv.FormatUint(seed, 10))
	require.NoError(t, err, "stderr:\n%s\nstdout:\n%s", stderr, stdout)
	assert.Regexp(t, `(?m)^[1-9][0-9]* passed, 0 failed$`, stdout)
	assert.Contains(t, stdout, fmt.Sprintf("seed %d", seed))
	// One summary row per KV type x head dim x GQA ratio, all for flatten:
	// cases, of which some with the fused reduction, worst error, tolerance.
	for _, kv := range []string{"f32", "f16"} {
		for _, dim := range []int{64, 128, 256} {
			for _, gqa := range []int{1, 4} {
				assert.Regexp(t, fmt.Sprintf(`(?m)^flatten\s+scalar\s+%s\s+%d\s+%d\s+\d+\s+[1-9]\d*\s+\S+\s+\S+\s+pass$`, kv, dim, gqa), stdout)
			}
		}
	}
	for _, m := range treeattn.Methods {
		if m == treeattn.MethodFlatten {
			continue
		}
		assert.NotRegexp(t, "(?m)^"+string(m)+`\s`, stdout, "only flatten was asked for")
	}

	_, _, err = runDeft(t, "conformance", "--method", "bogus")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown attention method "bogus"`)
}

var testGBPS = regexp.MustCompile(`copy\s+([0-9.]+) GB/s median`)

func TestProbeCommand(t *testing.T) {
	d := setupCLITest(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	// 8 MiB buffers may sit in a cache: measured and printed, but not saved
	// as the roofline (`--mib 1` used to replace it silently).
	stdout, stderr, err := runDeft(t, "probe", "--validation", "--mib", "8", "--runs", "3")
	require.NoError(t, err, stderr)
	m := testGBPS.FindStringSubmatch(stdout)
	require.NotNil(t, m, "no copy bandwidth in:\n%s", stdout)
	bw, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	assert.Greater(t, bw, 0.0)
	assert.Contains(t, stdout, "3 runs, 2 x 8 MiB")
	assert.Contains(t, stdout, d.Info.Name)
	assert.Contains(t, stderr, "not saved as the roofline: 2 x 8 MiB buffers may fit in the device's caches")
	_, err = probe.Load(d.Info.UUID)
	assert.ErrorIs(t, err, fs.ErrNotExist, "an in-cache figure was saved")

	// The default size is saved under the (temporary) user cache dir.
	def := probe.DefaultBytes(&d.Info)
	stdout, stderr, err = runDeft(t, "probe", "--validation", "--runs", "1")
	require.NoError(t, err, stderr)
	assert.NotContains(t, stderr, "warning", "saving the probe result failed")
	assert.NotContains(t, stderr, "not saved")
	m = testGBPS.FindStringSubmatch(stdout)
	require.NotNil(t, m, "no copy bandwidth in:\n%s", stdout)
	bw, err = strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	path, err := probe.CachePath(d.Info.UUID)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(path, os.Getenv("XDG_CACHE_HOME")), "cache path %s", path)
	saved, err := probe.Load(d.Info.UUID)
	require.NoError(t, err)
	assert.Equal(t, def, saved.BufferBytes)
	assert.Equal(t, 1, saved.Runs)
	assert.InDelta(t, bw, saved.BytesPerSec/1e9, 0.051)

	stdout, stderr, err = runDeft(t, "probe", "--json", "--validation", "--mib", "8", "--runs", "3")
	require.NoError(t, err, stderr)
	var res probe.Result
	require.NoError(t, json.Unmarshal([]byte(stdout), &res), stdout)
	assert.Greater(t, res.BytesPerSec, 0.0)
	assert.GreaterOrEqual(t, res.MedianNs, res.BestNs)
	assert.Equal(t, d.Info.UUID, res.UUID)
	again, err := probe.Load(d.Info.UUID)
	require.NoError(t, err)
	assert.Equal(t, saved.BytesPerSec, again.BytesPerSec, "the 8 MiB run replaced the saved roofline")
}

// TestProbeFlagRanges: --runs 0 and -5 used to run 20 silently and 1000 to
// fail on an internal timestamp limit; out-of-range values are refused.
func TestProbeFlagRanges(t *testing.T) {
	setupCLITest(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--runs", "0"}, fmt.Sprintf("--runs 0: want 1..%d", probe.MaxRuns)},
		{[]string{"--runs=-5"}, fmt.Sprintf("--runs -5: want 1..%d", probe.MaxRuns)},
		{[]string{"--runs", "1000"}, fmt.Sprintf("--runs 1000: want 1..%d", probe.MaxRuns)},
		{[]string{"--mib", "0"}, "--mib 0: want 1..1048576"},
		{[]string{"--mib", "2000000"}, "--mib 2000000: want 1..1048576"},
	} {
		_, _, err := runDeft(t, append([]string{"probe"}, tc.args...)...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, err.Error(), tc.want)
		assert.NotContains(t, err.Error(), "timestamp \"", "an internal limit leaked")
	}
}

func TestConformanceJSONIsOneDocument(t *testing.T) {
	setupCLITest(t)
	stdout, _, err := runDeft(t, "conformance", "--json", "--method", "flatten")
	require.NoError(t, err)
	var doc struct {
		Failed  int               `json:"failed"`
		Results []json.RawMessage `json:"results"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &doc))
	require.Zero(t, doc.Failed)
	require.NotEmpty(t, doc.Results)
}

func TestDevicesJSONBadSelection(t *testing.T) {
	setupCLITest(t)
	_, _, err := runDeft(t, "devices", "--json", "--device", "99")
	require.Error(t, err)
	require.Contains(t, err.Error(), "out of range")
}

// TestFlagHelp checks every command's flags: a default is printed once
// (flags used to say "(default 1/sqrt(dim)) (default: 0)"), required flags
// say so, and a one-letter name means the same flag in every command (-v
// was the values file in `attention` but verbose in `conformance`).
func TestFlagHelp(t *testing.T) {
	app := newApp()
	letters := map[string]string{} // -x -> the flag's name
	for _, cmd := range app.Commands {
		stdout, _, err := runDeft(t, cmd.Name, "--help")
		require.NoError(t, err)
		for _, line := range strings.Split(stdout, "\n") {
			assert.LessOrEqual(t, strings.Count(line, "(default"), 1, "deft %s: %q", cmd.Name, line)
		}
		for _, f := range cmd.Flags {
			names := f.Names()
			if rf, ok := f.(cli.RequiredFlag); ok && rf.IsRequired() {
				re := regexp.MustCompile(`(?m)^\s+-{1,2}` + regexp.QuoteMeta(names[0]) + ` .*\(required\)`)
				assert.Regexp(t, re, stdout, "deft %s --%s is required but its help does not say so", cmd.Name, names[0])
			}
			for _, n := range names {
				if len(n) != 1 {
					continue
				}
				if prev, ok := letters[n]; ok {
					assert.Equal(t, prev, names[0], "-%s means --%s in one command and --%s in deft %s", n, prev, names[0], cmd.Name)
				} else {
					letters[n] = names[0]
				}
			}
		}
	}
	assert.Equal(t, "v", letters["v"], "-v is attention's values file")
}

// TestBenchProgressLines: with stderr not a terminal (as here: a buffer),
// `deft bench` prints a line per finished method instead of staying silent
// until the table; --quiet silences them.
func TestBenchProgressLines(t *testing.T) {
	setupCLITest(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	b := newTestBadInputs(t, gputest.Rand(t))
	args := []string{"bench", "--validation", "--tree", b.tree, "--method", "flatten", "--method", "node",
		"--q-heads", "8", "--kv-heads", "2", "--head-dim", "64", "--kv", "f32", "--runs", "1", "--flush-mib", "1", "--warm-up", "0"}
	stdout, stderr, err := runDeft(t, args...)
	require.NoError(t, err, stderr)
	lines := regexp.MustCompile(`(?m)^bench: \[(\d)/2\] \S+tree\.json step 1/1 (\w+): \S+ per layer$`).FindAllStringSubmatch(stderr, -1)
	require.Len(t, lines, 2, "stderr:\n%s", stderr)
	assert.Equal(t, []string{"1", "flatten"}, lines[0][1:])
	assert.Equal(t, []string{"2", "node"}, lines[1][1:])
	assert.Contains(t, stdout, "flatten")

	_, stderr, err = runDeft(t, append(args, "--quiet")...)
	require.NoError(t, err)
	assert.NotContains(t, stderr, "bench: [")
}

// TestReadmeFigures ties the README's statements of limits and defaults to
// the constants that enforce them.
func TestReadmeFigures(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	readme := strings.Join(strings.Fields(string(raw)), " ") // line breaks as spaces
	for _, want := range []string{
		"run `go install ./cmd/deft` in a clone of this repository",
		fmt.Sprintf("must be a multiple of 4 and at most %d (`treeattn.MaxHeadDim`", treeattn.MaxHeadDim),
		fmt.Sprintf("median of 1..%d runs", probe.MaxRuns),
		fmt.Sprintf("merges at most %d partials per workgroup (`treeattn.MaxReduceFanIn`)", treeattn.MaxReduceFanIn),
		fmt.Sprintf("token chunks of at most %d shared-memory passes", treeattn.MaxTilePasses),
		"about 4 minutes on lavapipe",
	} {
		assert.Contains(t, readme, want)
	}
	m := regexp.MustCompile("default (\\S+) with f32 K/V, (\\S+) with f16, as `deft conformance`").FindStringSubmatch(readme)
	require.NotNil(t, m, "the README states --check's default tolerances")
	for i, want := range []float64{conformance.TolF32, conformance.TolF16} {
		got, err := strconv.ParseFloat(m[i+1], 64)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
}

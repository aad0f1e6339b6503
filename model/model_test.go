package model

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
	"github.com/stretchr/testify/require"
)

// goldenStep is one line of a golden top-5 file.
type goldenStep struct {
	in     int32
	ids    []int32
	logits []float64
}

func readGolden(t *testing.T, name string) []goldenStep {
	f, err := os.Open(testmodels.Path(t, "golden/"+name))
	require.NoError(t, err)
	defer f.Close()
	var out []goldenStep
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		require.GreaterOrEqual(t, len(fs), 6, "golden line %q", sc.Text())
		require.Equal(t, []string{"pos", fmt.Sprint(len(out)), "in"}, fs[:3])
		in, err := strconv.Atoi(fs[3])
		require.NoError(t, err)
		g := goldenStep{in: int32(in)}
		for _, p := range fs[5:] {
			id, lg, ok := strings.Cut(p, ":")
			require.True(t, ok)
			i, err := strconv.Atoi(id)
			require.NoError(t, err)
			v, err := strconv.ParseFloat(lg, 64)
			require.NoError(t, err)
			g.ids = append(g.ids, int32(i))
			g.logits = append(g.logits, v)
		}
		out = append(out, g)
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, out)
	return out
}

func openModel(t *testing.T, d *vk.Device, path string, opts Options) (*gguf.File, *Model) {
	t.Helper()
	f, err := gguf.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	m, err := Load(d, f, opts)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return f, m
}

func argmax(v []float32) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return int32(best)
}

// topK returns the indices of the k largest values, largest first.
func topK(v []float32, k int) []int32 {
	var out []int32
	used := map[int32]bool{}
	for range k {
		best := int32(-1)
		for i, x := range v {
			if !used[int32(i)] && (best < 0 || x > v[best]) {
				best = int32(i)
			}
		}
		used[best] = true
		out = append(out, best)
	}
	return out
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// relL2ref compares GPU logits with the reference's.
func relL2ref(got []float32, want []float64) float64 { return relL2(got, want) }

// checkGolden runs the golden file's inputs one token at a time on the GPU
// and the float64 reference (inputs 1..forced are a forced prompt, later
// ones the previous argmax): GPU logits within tol of the reference, the
// five largest in the golden order, the golden logits within tol of ours.
func checkGolden(t *testing.T, model, golden string, forced int, tol float64) {
	d := gputest.Device(t)
	f, m := openModel(t, d, testmodels.Path(t, model), Options{KV: treeattn.KVF32})
	ref := newRef(t, f).newSeq()
	steps := readGolden(t, golden)
	pool, err := NewPool(m, len(steps))
	require.NoError(t, err)
	defer pool.Close()
	seq := pool.NewSequence()
	worst := 0.0
	start := time.Now()
	for i, g := range steps {
		if i > forced {
			require.Equal(t, g.in, steps[i-1].ids[0], "golden file: input %d is not the previous argmax", i)
		}
		logits, err := m.Eval(pool, seq, []int32{g.in})
		require.NoError(t, err)
		want := ref.eval(g.in)
		e := relL2ref(logits, want)
		worst = max(worst, e)
		require.Less(t, e, tol, "position %d: rel L2 against the float64 reference", i)
		require.Equal(t, g.ids, topK(logits, 5), "position %d: top-5 ids", i)
		for j, id := range g.ids {
			require.InDelta(t, g.logits[j], logits[id], tol*max(1, abs(g.logits[j]))*10, "position %d: logit of %d", i, id)
		}
	}
	t.Logf("%d positions in %v: worst rel L2 %.2e against the float64 reference", len(steps), time.Since(start), worst)
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

func TestStoriesGoldenTop5(t *testing.T) {
	checkGolden(t, "stories260K.gguf", "stories260K-bos-top5.txt", 0, 1e-4)
}

func TestLlama2TinyGoldenTop5(t *testing.T) {
	checkGolden(t, "llama-2-tiny-random.gguf", "llama-2-tiny-random-top5.txt", 2, 1e-4)
}

// Greedy decoding of stories260K from BOS reproduces the golden story.
func TestStoriesGreedy(t *testing.T) {
	d := gputest.Device(t)
	f, m := openModel(t, d, testmodels.Path(t, "stories260K.gguf"), Options{KV: treeattn.KVF32})
	tok, err := TokenizerFrom(f)
	require.NoError(t, err)
	golden, err := os.ReadFile(testmodels.Path(t, "golden/stories260K-bos-greedy.txt"))
	require.NoError(t, err)
	const steps = 200
	pool, err := NewPool(m, steps+1)
	require.NoError(t, err)
	defer pool.Close()
	seq := pool.NewSequence()
	ids := []int32{tok.BOS()}
	start := time.Now()
	for len(ids) <= steps {
		logits, err := m.Eval(pool, seq, ids[len(ids)-1:])
		require.NoError(t, err)
		next := argmax(logits)
		if next == tok.EOS() || next == tok.BOS() {
			break
		}
		ids = append(ids, next)
	}
	t.Logf("%d tokens in %v", len(ids)-1, time.Since(start))
	require.Equal(t, strings.TrimSuffix(string(golden), "\n"), tok.Decode(ids))
}

// runAlone evaluates prompt (if any) then tokens on a fresh pool, returning the
// logits of every token of tokens.
func runAlone(t *testing.T, m *Model, prompt, tokens []int32) [][]float32 {
	pool, err := NewPool(m, len(prompt)+len(tokens))
	require.NoError(t, err)
	defer pool.Close()
	seq := pool.NewSequence()
	if len(prompt) > 0 {
		_, err = m.Eval(pool, seq, prompt)
		require.NoError(t, err)
	}
	_, err = pool.Append(seq, len(tokens))
	require.NoError(t, err)
	var qs []kvpool.Query
	rows := make([]int, len(tokens))
	for i := range tokens {
		qs = append(qs, kvpool.Query{Node: seq, Offset: len(prompt) + i})
		rows[i] = i
	}
	step, err := pool.Tree(qs)
	require.NoError(t, err)
	out, err := m.Forward(pool, Batch{Tokens: tokens, Step: step, LogitRows: rows})
	require.NoError(t, err)
	return out
}

// One forward pass over two branches forked from a prompt gives each
// branch's logits as running it alone does; so does a second step that
// extends both branches by one token.
func TestTreeStep(t *testing.T) {
	d := gputest.Device(t)
	_, m := openModel(t, d, testmodels.Path(t, "stories260K.gguf"), Options{KV: treeattn.KVF32})
	r := gputest.Rand(t)
	rnd := func(n int) []int32 {
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(3 + r.IntN(m.Config().Vocab-3))
		}
		return out
	}
	prompt := append([]int32{1}, rnd(6)...)
	a, b := rnd(3), rnd(2)
	a2, b2 := rnd(1), rnd(1)

	pool, err := NewPool(m, 64)
	require.NoError(t, err)
	defer pool.Close()
	seq := pool.NewSequence()
	_, err = m.Eval(pool, seq, prompt)
	require.NoError(t, err)
	A, err := pool.Fork(seq)
	require.NoError(t, err)
	B, err := pool.Fork(seq)
	require.NoError(t, err)

	// Step 1: A gets 3 tokens, B 2, in one pass; B's tokens first.
	_, err = pool.Append(A, len(a))
	require.NoError(t, err)
	_, err = pool.Append(B, len(b))
	require.NoError(t, err)
	qs := []kvpool.Query{{Node: B, Offset: 0}, {Node: B, Offset: 1}, {Node: A, Offset: 0}, {Node: A, Offset: 1}, {Node: A, Offset: 2}}
	step, err := pool.Tree(qs)
	require.NoError(t, err)
	got, err := m.Forward(pool, Batch{Tokens: append(append([]int32{}, b...), a...), Step: step, LogitRows: []int{4, 3, 2, 1, 0}})
	require.NoError(t, err)
	wantA := runAlone(t, m, prompt, a)
	wantB := runAlone(t, m, prompt, b)
	check := func(what string, got []float32, want []float32) {
		e := relL2(got, f64(want))
		t.Logf("%s: rel L2 %.2e", what, e)
		require.Less(t, e, 1e-5, what)
	}
	for i := range a {
		check(fmt.Sprintf("step 1 branch A token %d", i), got[2-i], wantA[i])
	}
	for i := range b {
		check(fmt.Sprintf("step 1 branch B token %d", i), got[4-i], wantB[i])
	}

	// Step 2: one token on each branch (plain tree decoding).
	_, err = pool.Append(A, 1)
	require.NoError(t, err)
	_, err = pool.Append(B, 1)
	require.NoError(t, err)
	step, err = pool.Tree([]kvpool.Query{kvpool.Last(A), kvpool.Last(B)})
	require.NoError(t, err)
	got, err = m.Forward(pool, Batch{Tokens: []int32{a2[0], b2[0]}, Step: step, LogitRows: []int{0, 1}})
	require.NoError(t, err)
	check("step 2 branch A", got[0], runAlone(t, m, prompt, append(append([]int32{}, a...), a2...))[len(a)])
	check("step 2 branch B", got[1], runAlone(t, m, prompt, append(append([]int32{}, b...), b2...))[len(b)])
}

// A prompt longer than the chunk size runs in chunks with the same logits
// as one token at a time; a batch out of order is refused when chunked.
func TestChunkedPrefill(t *testing.T) {
	d := gputest.Device(t)
	f, _ := openModel(t, d, testmodels.Path(t, "stories260K.gguf"), Options{KV: treeattn.KVF32})
	m, err := Load(d, f, Options{KV: treeattn.KVF32, ChunkTokens: 8})
	require.NoError(t, err)
	defer m.Close()
	r := gputest.Rand(t)
	prompt := []int32{1}
	for range 29 {
		prompt = append(prompt, int32(3+r.IntN(500)))
	}
	pool, err := NewPool(m, 64)
	require.NoError(t, err)
	defer pool.Close()
	seq := pool.NewSequence()
	_, err = pool.Append(seq, len(prompt))
	require.NoError(t, err)
	var qs []kvpool.Query
	rows := make([]int, len(prompt))
	for i := range prompt {
		qs = append(qs, kvpool.Query{Node: seq, Offset: i})
		rows[i] = i
	}
	step, err := pool.Tree(qs)
	require.NoError(t, err)
	got, err := m.Forward(pool, Batch{Tokens: prompt, Step: step, LogitRows: rows})
	require.NoError(t, err)

	// The chunks run matmul (8 rows), but the logits of all 30 rows are one
	// batch: coopmat gemm where the device has it.
	tol, err := m.BatchTolerance(len(rows))
	require.NoError(t, err)
	ref := newRef(t, f).newSeq()
	worst := 0.0
	for i, tk := range prompt {
		e := relL2(got[i], ref.eval(tk))
		worst = max(worst, e)
		require.Less(t, e, tol, "token %d", i)
	}
	t.Logf("%d tokens in chunks of 8: worst rel L2 %.2e against the float64 reference", len(prompt), worst)

	// Reversed order: a chunk would see tokens not written yet.
	rev := make([]kvpool.Query, len(qs))
	for i, q := range qs {
		rev[len(qs)-1-i] = q
	}
	step, err = pool.Tree(rev)
	require.NoError(t, err)
	_, err = m.Forward(pool, Batch{Tokens: prompt, Step: step})
	require.ErrorContains(t, err, "before its predecessor")
}

// Two evaluations of the same tokens in fresh pools give bit-identical
// logits (no float atomics, fixed reduction orders).
func TestForwardDeterministic(t *testing.T) {
	d := gputest.Device(t)
	_, m := openModel(t, d, testmodels.Path(t, "stories260K.gguf"), Options{KV: treeattn.KVF16})
	r := gputest.Rand(t)
	prompt := []int32{1}
	for range 20 {
		prompt = append(prompt, int32(3+r.IntN(500)))
	}
	var runs [2][]float32
	for i := range runs {
		pool, err := NewPool(m, len(prompt))
		require.NoError(t, err)
		seq := pool.NewSequence()
		_, err = m.Eval(pool, seq, prompt[:15])
		require.NoError(t, err)
		runs[i], err = m.Eval(pool, seq, prompt[15:])
		require.NoError(t, err)
		pool.Close()
	}
	require.Len(t, runs[0], m.Config().Vocab)
	for i := range runs[0] {
		require.Equal(t, math.Float32bits(runs[0][i]), math.Float32bits(runs[1][i]), "logit %d", i)
	}
}

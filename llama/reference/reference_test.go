package reference

import (
	"bufio"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/llama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// goldenPos is one line of a golden top-5 file: the input token at a
// position and the five largest logits that follow.
type goldenPos struct {
	in  int32
	ids []int32
	lgt []float64
}

func readGolden(t *testing.T, name string) []goldenPos {
	t.Helper()
	fh, err := os.Open(filepath.Join(testmodels.Dir(t), "golden", name))
	require.NoError(t, err)
	defer fh.Close()
	var out []goldenPos
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		// pos N in ID top id:logit id:logit ...
		f := strings.Fields(sc.Text())
		require.True(t, len(f) == 10 && f[0] == "pos" && f[2] == "in" && f[4] == "top", "line %q", sc.Text())
		require.Equal(t, strconv.Itoa(len(out)), f[1])
		in, err := strconv.Atoi(f[3])
		require.NoError(t, err)
		g := goldenPos{in: int32(in)}
		for _, p := range f[5:] {
			id, lg, ok := strings.Cut(p, ":")
			require.True(t, ok)
			i, err := strconv.Atoi(id)
			require.NoError(t, err)
			l, err := strconv.ParseFloat(lg, 64)
			require.NoError(t, err)
			g.ids = append(g.ids, int32(i))
			g.lgt = append(g.lgt, l)
		}
		out = append(out, g)
	}
	require.NoError(t, sc.Err())
	return out
}

func load(t testing.TB, path string) (*Model, *gguf.File) {
	t.Helper()
	f, err := gguf.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	cfg, err := llama.ConfigFrom(f)
	require.NoError(t, err)
	m, err := New(cfg, f)
	require.NoError(t, err)
	return m, f
}

func top5(logits []float64) []int32 {
	ids := make([]int32, len(logits))
	for i := range ids {
		ids[i] = int32(i)
	}
	sort.SliceStable(ids, func(a, b int) bool { return logits[ids[a]] > logits[ids[b]] })
	return ids[:5]
}

func argmax(v []float64) int32 { return top5(v)[0] }

// checkGolden feeds the golden inputs and compares the top five logits at
// every position: ids exactly, values within absTol + relTol*|golden|.
func checkGolden(t *testing.T, m *Model, golden []goldenPos, relTol, absTol float64) {
	t.Helper()
	s := m.NewSequence()
	worst := 0.0
	for p, g := range golden {
		logits, err := s.Eval(g.in)
		require.NoError(t, err)
		require.Equal(t, g.ids, top5(logits), "top-5 ids at position %d", p)
		for i, id := range g.ids {
			d := math.Abs(logits[id] - g.lgt[i])
			worst = max(worst, d)
			require.LessOrEqual(t, d, absTol+relTol*math.Abs(g.lgt[i]),
				"position %d token %d: logit %.7f, golden %.6f", p, id, logits[id], g.lgt[i])
		}
		if p+1 < len(golden) && p >= 2 { // after the forced prompt, decoding is greedy
			require.Equal(t, golden[p+1].in, argmax(logits), "greedy token after position %d", p)
		}
	}
	t.Logf("largest logit difference from golden: %.2e", worst)
}

func TestStoriesGoldenTop5(t *testing.T) {
	m, _ := load(t, testmodels.Path(t, "stories260K.gguf"))
	checkGolden(t, m, readGolden(t, "stories260K-bos-top5.txt"), 1e-4, 0)
}

// The random model's top logits differ by only 1e-3; the golden values have
// six decimals, so float64 must agree to their rounding (5e-7; measured
// 5.0e-7) within 1e-6.
func TestRandomGoldenTop5(t *testing.T) {
	m, _ := load(t, testmodels.Path(t, "llama-2-tiny-random.gguf"))
	golden := readGolden(t, "llama-2-tiny-random-top5.txt")
	require.Equal(t, []int32{1, 15043, 3186}, []int32{golden[0].in, golden[1].in, golden[2].in})
	checkGolden(t, m, golden, 0, 1e-6)
}

// decodePieces turns SentencePiece ids into text the simple way ("▁" is a
// space, <0xNN> a byte), enough for stories260K's output.
func decodePieces(t *testing.T, f *gguf.File, ids []int32) string {
	toks, err := f.Strings("tokenizer.ggml.tokens")
	require.NoError(t, err)
	var b strings.Builder
	for _, id := range ids {
		p := toks[id]
		if strings.HasPrefix(p, "<0x") && strings.HasSuffix(p, ">") && len(p) == 6 {
			v, err := strconv.ParseUint(p[3:5], 16, 8)
			require.NoError(t, err)
			b.WriteByte(byte(v))
			continue
		}
		b.WriteString(strings.ReplaceAll(p, "\u2581", " "))
	}
	return b.String()
}

// Greedy decoding of stories260K from BOS for 200 steps (stopping at BOS or
// EOS) starts with the golden top-5 file's inputs and spells the golden
// text.
func TestStoriesGreedy200(t *testing.T) {
	m, f := load(t, testmodels.Path(t, "stories260K.gguf"))
	cfg := m.Config()
	golden := readGolden(t, "stories260K-bos-top5.txt")
	s := m.NewSequence()
	tok := cfg.BOS
	var out []int32
	for range 200 {
		logits, err := s.Eval(tok)
		require.NoError(t, err)
		tok = argmax(logits)
		if tok == cfg.EOS || tok == cfg.BOS {
			break
		}
		out = append(out, tok)
	}
	for p := 1; p < len(golden); p++ {
		require.Equal(t, golden[p].in, out[p-1], "greedy token %d", p-1)
	}
	text, err := os.ReadFile(filepath.Join(testmodels.Dir(t), "golden", "stories260K-bos-greedy.txt"))
	require.NoError(t, err)
	assert.Equal(t, strings.TrimRight(string(text), "\n"), decodePieces(t, f, out))
	t.Logf("%d tokens", len(out))
}

// A clone continues exactly as the original would, and the two branches do
// not disturb each other.
func TestClone(t *testing.T) {
	m, _ := load(t, testmodels.Path(t, "stories260K.gguf"))
	prefix := []int32{1, 403, 407, 261, 378}
	run := func(toks ...int32) []float64 {
		s := m.NewSequence()
		var l []float64
		for _, tk := range toks {
			var err error
			l, err = s.Eval(tk)
			require.NoError(t, err)
		}
		return l
	}
	a := m.NewSequence()
	for _, tk := range prefix {
		_, err := a.Eval(tk)
		require.NoError(t, err)
	}
	b := a.Clone()
	la, err := a.Eval(432)
	require.NoError(t, err)
	lb, err := b.Eval(100)
	require.NoError(t, err)
	assert.Equal(t, run(append(prefix, 432)...), la)
	assert.Equal(t, run(append(prefix, 100)...), lb)
	assert.Equal(t, 6, a.Len())
	assert.Equal(t, 6, b.Len())
	_, err = a.Eval(512)
	assert.ErrorContains(t, err, "token 512 outside the vocabulary of 512")
}

// RoPE rotates adjacent pairs of the first RopeDims dims by pos*theta_i,
// theta_i = base^(-2i/RopeDims) / RopeFreqs[i]; the rest of the head stays.
func TestRope(t *testing.T) {
	cfg := llama.Config{RopeDims: 4, RopeBase: 100}
	assert.Equal(t, []float64{1, 0.1}, ropeThetas(cfg))
	cfg.RopeFreqs = []float64{1, 2}
	m := &Model{ropeTheta: ropeThetas(cfg)}
	assert.Equal(t, []float64{1, 0.05}, m.ropeTheta)
	v := []float64{1, 0, 0, 1, 5, -5}
	m.rope(v, 3)
	want := []float64{math.Cos(3), math.Sin(3), -math.Sin(0.15), math.Cos(0.15), 5, -5}
	assert.InDeltaSlice(t, want, v, 1e-15)
	v = []float64{0.3, -0.7, 2, 1, 5, -5}
	m.rope(v, 0)
	assert.Equal(t, []float64{0.3, -0.7, 2, 1, 5, -5}, v, "position 0 is the identity")
}

// The Llama 3 vocabulary model (GQA 2:1, base 500000) runs; there is no
// golden data for it, so this checks shapes and finiteness.
func TestLlama3Runs(t *testing.T) {
	m, _ := load(t, testmodels.Path(t, "llama-3-tiny-random.gguf"))
	s := m.NewSequence()
	for _, tk := range []int32{m.Config().BOS, 9906, 1917} {
		l, err := s.Eval(tk)
		require.NoError(t, err)
		require.Len(t, l, 128256)
		for i, x := range l {
			require.False(t, math.IsNaN(x) || math.IsInf(x, 0), "logit %d is %v", i, x)
		}
	}
}

package model

import (
	"bufio"
	"fmt"
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

var _ = kvpool.Last

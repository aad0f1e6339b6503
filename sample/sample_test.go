package sample

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

func logitsOf(p []float64) []float32 {
	out := make([]float32, len(p))
	for i, x := range p {
		out[i] = float32(math.Log(x))
	}
	return out
}

func TestGreedy(t *testing.T) {
	s, err := New(Params{})
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(1, 2))
	for range 100 {
		l := make([]float32, 50)
		for i := range l {
			l[i] = float32(r.NormFloat64())
		}
		want := 0
		for i := range l {
			if l[i] > l[want] {
				want = i
			}
		}
		got, err := s.Sample(l)
		require.NoError(t, err)
		require.EqualValues(t, want, got)
	}
}

// frequencies draws n samples and returns how often each id came.
func frequencies(t *testing.T, p Params, logits []float32, n int) []float64 {
	s, err := New(p)
	require.NoError(t, err)
	f := make([]float64, len(logits))
	for range n {
		id, err := s.Sample(logits)
		require.NoError(t, err)
		f[id]++
	}
	for i := range f {
		f[i] /= float64(n)
	}
	return f
}

func TestTruncations(t *testing.T) {
	probs := []float64{0.05, 0.4, 0.1, 0.3, 0.15}
	l := logitsOf(probs)
	const n = 40000
	cases := []struct {
		name string
		p    Params
		want []float64
	}{
		{"temp 1", Params{Temp: 1}, probs},
		{"top-k 2", Params{Temp: 1, TopK: 2}, []float64{0, 0.4 / 0.7, 0, 0.3 / 0.7, 0}},
		// 0.4 + 0.3 < 0.75 <= 0.4 + 0.3 + 0.15
		{"top-p 0.75", Params{Temp: 1, TopP: 0.75}, []float64{0, 0.4 / 0.85, 0, 0.3 / 0.85, 0.15 / 0.85}},
		// 0.3 >= 0.5 * 0.4 > 0.15
		{"min-p 0.5", Params{Temp: 1, MinP: 0.5}, []float64{0, 0.4 / 0.7, 0, 0.3 / 0.7, 0}},
		// temperature 0.5 squares the probabilities
		{"temp 0.5", Params{Temp: 0.5, TopK: 2}, []float64{0, 0.16 / 0.25, 0, 0.09 / 0.25, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.p.Seed = 7
			got := frequencies(t, c.p, l, n)
			for i := range got {
				require.InDelta(t, c.want[i], got[i], 0.015, "token %d: %v", i, got)
			}
		})
	}
}

func TestSeedRepeats(t *testing.T) {
	l := logitsOf([]float64{0.2, 0.3, 0.5})
	a := frequencies(t, Params{Temp: 1, Seed: 3}, l, 100)
	b := frequencies(t, Params{Temp: 1, Seed: 3}, l, 100)
	require.Equal(t, a, b)
}

func TestErrors(t *testing.T) {
	for _, p := range []Params{{Temp: -1}, {TopK: -1}, {TopP: 1.5}, {MinP: math.NaN()}} {
		_, err := New(p)
		require.Error(t, err, "%+v", p)
	}
	s, err := New(Params{Temp: 1})
	require.NoError(t, err)
	_, err = s.Sample(nil)
	require.Error(t, err)
	_, err = s.Sample([]float32{float32(math.NaN())})
	require.Error(t, err)
	_, err = s.Sample([]float32{float32(math.Inf(-1))})
	require.Error(t, err)
}

func TestLogProb(t *testing.T) {
	probs := []float64{0.1, 0.2, 0.7}
	for i, p := range probs {
		require.InDelta(t, math.Log(p), LogProb(logitsOf(probs), int32(i)), 1e-6)
	}
}

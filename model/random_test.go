package model

import (
	"math"
	"testing"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/modelgen"
	"github.com/deft-vk/deft/treeattn"
	"github.com/stretchr/testify/require"
)

// A random tiny model gives finite logits of a sane scale at every position.
func TestLoadRandomSmoke(t *testing.T) {
	d := gputest.Device(t)
	cfg, err := modelgen.ShapeConfig("tiny")
	require.NoError(t, err)
	types, err := modelgen.TensorTypes("f16", cfg)
	require.NoError(t, err)
	var calls int
	var last, total uint64
	m, err := LoadRandom(d, RandomSpec{Config: cfg, TensorType: types, Seed: 7}, Options{KV: treeattn.KVF32,
		Progress: func(done, tot uint64) { calls++; last, total = done, tot }})
	require.NoError(t, err)
	defer m.Close()
	require.Positive(t, calls)
	require.Equal(t, total, last)
	pool, err := NewPool(m, 16)
	require.NoError(t, err)
	defer pool.Close()
	seq := pool.NewSequence()
	for i, tok := range []int32{1, 100, 200, 300} {
		logits, err := m.Eval(pool, seq, []int32{tok})
		require.NoError(t, err)
		var ss float64
		for _, v := range logits {
			require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0), "position %d", i)
			ss += float64(v) * float64(v)
		}
		rms := math.Sqrt(ss / float64(len(logits)))
		t.Logf("position %d: logit rms %.3f", i, rms)
		require.Greater(t, rms, 0.05)
		require.Less(t, rms, 20.0)
	}
}

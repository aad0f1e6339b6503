package model

import (
	"bytes"
	"math"
	"testing"

	"github.com/deft-vk/deft/gguf"
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

// weight_fill writes exactly modelgen.Fill's bytes for every type, in parts
// that start at byte offsets that are not word-aligned.
func TestWeightFillMatchesHost(t *testing.T) {
	d := gputest.Device(t)
	o := newOps(d)
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	rng := gputest.Rand(t)
	for _, typ := range []gguf.TensorType{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K} {
		t.Run(typ.String(), func(t *testing.T) {
			for _, dims := range [][]uint64{{256, 7}, {512, 13}} {
				cols, rows := dims[0], dims[1]
				parts, rb, err := planParts(d, "w", typ, dims, 3)
				require.NoError(t, err)
				w := &weight{name: "w", typ: typ, cols: int(cols), rows: int(rows), rowBytes: int(rb)}
				defer w.close()
				for _, p := range parts {
					p.buf, err = d.NewBuffer(uint64(p.rows)*rb + wordPad)
					require.NoError(t, err)
					poison := make([]byte, p.buf.Size())
					for i := range poison {
						poison[i] = 0xff // NaN in every float type
					}
					require.NoError(t, p.buf.Write(0, poison))
					w.parts = append(w.parts, p)
				}
				seed := rng.Uint64()
				for _, norm := range []bool{false, true} {
					p := modelgen.TensorParams(seed, "blk.0.attn_q.weight", typ, dims)
					if norm {
						p.Norm = true
					}
					var prog progress
					require.NoError(t, fillWeightDevice(o, rec, w, p, &prog))
					require.Equal(t, w.dataBytes(), prog.done)
					want := make([]byte, w.dataBytes())
					require.NoError(t, modelgen.Fill(want, typ, p, 0))
					got := make([]byte, 0, len(want))
					for _, part := range w.parts {
						b := make([]byte, uint64(part.rows)*rb)
						require.NoError(t, part.buf.Read(0, b))
						got = append(got, b...)
					}
					require.True(t, bytes.Equal(want, got), "%s %v norm %v: GPU bytes differ from the host generator's", typ, dims, norm)
				}
			}
		})
	}
}

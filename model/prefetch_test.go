package model

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/kernels"
)

// l2_prefetch reads every 16-byte word of its range exactly once: with
// Check set, the XOR of the invocations' sums is the XOR of the range (a
// word read twice or missed would change it), for ranges that start
// inside the buffer and need several grid-stride steps; without Check and
// a magic no sum equals, it writes nothing.
func TestL2Prefetch(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	o := newOps(d)
	defer o.close()
	p, err := o.pipeline(kernels.L2Prefetch, kernels.SpecValues{"local_size_x": prefetchGroup})
	require.NoError(t, err)
	const words = 40000 // 16-byte words
	data := make([]uint32, 4*words)
	for i := range data {
		data[i] = r.Uint32()
	}
	src, err := d.NewBuffer(4 * uint64(len(data)))
	require.NoError(t, err)
	defer src.Close()
	require.NoError(t, src.WriteU32(0, data))
	sink, err := d.NewBuffer(16)
	require.NoError(t, err)
	defer sink.Close()
	for _, tc := range []struct {
		first, n int
		grid     uint32
	}{{0, words, 4}, {1, 1, 1}, {123, words - 123, 7}, {5000, 999, 2}} {
		for _, check := range []bool{true, false} {
			require.NoError(t, sink.WriteU32(0, []uint32{0, 0, 0, 0}))
			rec, err := d.NewRecorder()
			require.NoError(t, err)
			push := kernels.L2PrefetchPush{First: uint32(tc.first), N: uint32(tc.n), Magic: 0x9e3779b9}
			if check {
				push.Check = 1
			}
			require.NoError(t, p.Dispatch(rec, [3]uint32{tc.grid, 1, 1}, push, src.All(), sink.All()))
			require.NoError(t, rec.Submit())
			rec.Close()
			got := make([]uint32, 4)
			require.NoError(t, sink.ReadU32(0, got))
			want := make([]uint32, 4)
			if check {
				for i := tc.first; i < tc.first+tc.n; i++ {
					for l := range 4 {
						want[l] ^= data[4*i+l]
					}
				}
			}
			require.Equal(t, want, got, "range %d+%d, grid %d, check %v", tc.first, tc.n, tc.grid, check)
		}
	}
}

// Decoding steps that prefetch the next weights beside attention give
// logits bit-identical to steps that do not, with the prefetch dispatches
// recorded and no barrier added (they must overlap attention).
func TestForwardPrefetch(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	_, m := openModel(t, d, testmodels.Path(t, "stories260K.gguf"), Options{})
	prompt := []int32{1}
	for range 5 {
		prompt = append(prompt, int32(3+r.IntN(m.Config().Vocab-3)))
	}
	next := []int32{int32(3 + r.IntN(m.Config().Vocab-3))}
	type result struct {
		logits              [][]float32
		dispatches, barrier int
	}
	run := func(prefetch uint64) result {
		m.opts.PrefetchBytes = prefetch
		defer func() { m.opts.PrefetchBytes = 0 }()
		pool, err := NewPool(m, 64)
		require.NoError(t, err)
		defer pool.Close()
		var res result
		seq := pool.NewSequence()
		for _, toks := range [][]int32{prompt, next, next} {
			out, err := m.Eval(pool, seq, toks)
			require.NoError(t, err)
			res.logits = append(res.logits, out)
		}
		res.dispatches, res.barrier = m.rec.Stats() // the last decoding step's
		return res
	}
	want := run(0)
	// All of the output projection and part of gate/up; then a budget
	// larger than both.
	for _, budget := range []uint64{uint64(m.layers[0].o.bytes()) + 4096, 1 << 30} {
		got := run(budget)
		for i := range want.logits {
			for j := range want.logits[i] {
				require.False(t, math.IsNaN(float64(got.logits[i][j])), "logits %d: %d is NaN", i, j)
				require.Equal(t, math.Float32bits(want.logits[i][j]), math.Float32bits(got.logits[i][j]), "logits %d: %d", i, j)
			}
		}
		require.Equal(t, want.barrier, got.barrier, "budget %d: prefetching added barriers", budget)
		require.Equal(t, want.dispatches+2*m.Config().Blocks, got.dispatches, "budget %d: one prefetch of o and one of gate/up per layer", budget)
	}
}

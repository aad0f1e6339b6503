package treeattn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReduceSchedule checks the levels of a reduction on random partial
// counts per query: every partial is merged exactly once, every
// intermediate is written once and then merged once, no group exceeds the
// fan-in, and shallow plans keep their one pass without extra metadata.
func TestReduceSchedule(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for iter := 0; iter < 200; iter++ {
		fanIn := 2 + rng.IntN(6)
		nq := 1 + rng.IntN(5)
		counts := make([]int, nq)
		p := &Plan{NumQueries: nq}
		p.meta = make([]uint32, 7) // unrelated words before the index
		p.offsetsOff = uint32(len(p.meta))
		off := uint32(0)
		for q := range counts {
			counts[q] = 1 + rng.IntN(fanIn*fanIn*fanIn+2)
			p.meta = append(p.meta, off)
			off += uint32(counts[q])
		}
		p.meta = append(p.meta, off)
		p.listOff = uint32(len(p.meta))
		for i := range off {
			p.meta = append(p.meta, i) // query q's partials are consecutive
		}
		p.Partials = int(off)

		passes, extra, partials := p.reduceSchedule(fanIn, nil)
		meta := append(append([]uint32(nil), p.meta...), extra...)
		merged := make([]int, partials) // times each partial is read
		written := make([]int, partials)
		for i := range p.Partials {
			written[i] = 1 // by partial_attn
		}
		for pi, pass := range passes {
			last := pi == len(passes)-1
			require.Equal(t, !last, pass.toPartials)
			if last {
				require.Equal(t, nq, pass.groups)
			}
			for g := range pass.groups {
				begin, end := meta[pass.offsetsOff+uint32(g)], meta[pass.offsetsOff+uint32(g)+1]
				require.LessOrEqual(t, int(end-begin), fanIn, "pass %d group %d", pi, g)
				require.Less(t, begin, end)
				for _, part := range meta[pass.listOff+begin : pass.listOff+end] {
					require.Equal(t, 1, written[part], "partial %d read before it is written", part)
					merged[part]++
				}
				if pass.toPartials {
					written[pass.outBase+uint32(g)]++
				}
			}
		}
		for i, n := range merged {
			require.Equal(t, 1, n, "partial %d merged %d times", i, n)
		}
		deep := false
		for _, c := range counts {
			deep = deep || c > fanIn
		}
		if !deep {
			assert.Len(t, passes, 1)
			assert.Empty(t, extra)
			assert.Equal(t, p.offsetsOff, passes[0].offsetsOff)
		}
	}
}

func TestScoreUnit(t *testing.T) {
	for _, tc := range []struct {
		bound, scale float64
		unit         float64
		err          string
	}{
		{0, 0.5, 1, ""},
		{1e30, 0.5, 1, ""}, // below 2^100
		{1e40, 0.5, math.Ldexp(1, 133-scoreExpLimit), ""}, // 1e40 < 2^133
		{math.Ldexp(1, 200), 0.5, math.Ldexp(1, 100), ""},
		{math.Ldexp(1, 201), 0.5, 0, "exceed what fp32 attention computes"},
		{math.Inf(1), 0.5, 0, "unbounded"},
		{math.NaN(), 0.5, 0, "must be non-negative"},
		{1e40, 1e-30, 0, "underflows fp32"},
	} {
		unit, scaled, err := scoreUnit(tc.bound, tc.scale)
		if tc.err != "" {
			require.Error(t, err, "bound %g", tc.bound)
			assert.Contains(t, err.Error(), tc.err)
			continue
		}
		require.NoError(t, err, "bound %g", tc.bound)
		assert.Equal(t, tc.unit, unit, "bound %g", tc.bound)
		assert.Equal(t, float32(tc.scale/unit), scaled)
		assert.LessOrEqual(t, tc.bound/unit, math.Ldexp(1, scoreExpLimit), "scores in units stay below 2^%d", scoreExpLimit)
	}
}

// The documented head-dim limit is the one the kernels' tiles enforce.
func TestMaxHeadDim(t *testing.T) {
	lim := Limits{SharedMemory: 1 << 16, MaxInvocations: 1024, MaxWorkgroupCount: [3]int{65535, 65535, 65535}}
	_, err := ChooseTiles(Shape{QHeads: 8, KVHeads: 2, HeadDim: MaxHeadDim}, lim)
	require.NoError(t, err)
	for _, dim := range []int{MaxHeadDim + 4, 6, 130} {
		_, err := ChooseTiles(Shape{QHeads: 8, KVHeads: 2, HeadDim: dim}, lim)
		require.Error(t, err, "head dim %d", dim)
		assert.Contains(t, err.Error(), fmt.Sprintf("must be a multiple of 4 and at most %d", MaxHeadDim))
	}
}

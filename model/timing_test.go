package model

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/treeattn"
)

// Timestamps measure without changing results: the same logits under every
// timing mode and method switch, GPU times only when asked for, attention a
// part of the step.
func TestTimingAndSetMethod(t *testing.T) {
	d := gputest.Device(t)
	_, m := openModel(t, d, testmodels.Path(t, "stories260K.gguf"), Options{KV: treeattn.KVF32, ChunkTokens: 4})
	pool, err := NewPool(m, 64)
	require.NoError(t, err)
	defer pool.Close()
	seq := pool.NewSequence()
	prompt := []int32{1, 5, 9, 22, 31, 40} // two chunks
	_, err = m.Eval(pool, seq, prompt)
	require.NoError(t, err)
	assert.Equal(t, StepTimes{}, m.LastTimes(), "no timestamps by default")

	// Re-evaluate the last token in place under each mode.
	q := []int32{prompt[len(prompt)-1]}
	step, err := pool.Tree(nil)
	require.NoError(t, err)
	batch := Batch{Tokens: q, Step: step, LogitRows: []int{0}}
	ref, err := m.Forward(pool, batch)
	require.NoError(t, err)
	for _, mode := range []Timing{TimingStep, TimingAttention, TimingKernels} {
		for _, meth := range []treeattn.Method{treeattn.MethodFlashDecoding, treeattn.MethodFlatten} {
			m.SetTiming(mode)
			require.NoError(t, m.SetMethod(meth))
			got, err := m.Forward(pool, batch)
			require.NoError(t, err)
			assert.InDeltaSlice(t, ref[0], got[0], 1e-4, "mode %d %s", mode, meth)
			tm := m.LastTimes()
			assert.Positive(t, tm.GPU)
			if mode >= TimingAttention {
				assert.Positive(t, tm.Attention)
				assert.Less(t, tm.Attention, tm.GPU)
			} else {
				assert.Zero(t, tm.Attention)
			}
			if mode < TimingKernels {
				assert.Empty(t, tm.Kernels)
				continue
			}
			// Every kind of work is there once, and the kinds make up the step
			// (less the spans between back-to-back timestamps).
			var names []string
			var sum time.Duration
			for _, k := range tm.Kernels {
				names = append(names, k.Name)
				sum += k.Time
				if k.Name == stampAttnEnd {
					assert.Equal(t, tm.Attention, k.Time)
				}
			}
			assert.ElementsMatch(t, []string{"embed", "qkv", "rope-kv-write", "attention", "o-proj", "gate-up", "down", "logits"}, names)
			assert.LessOrEqual(t, sum, tm.GPU)
			assert.Greater(t, sum, tm.GPU/2)
		}
	}
	assert.Error(t, m.SetMethod("bogus"))
	assert.Equal(t, treeattn.MethodFlatten, m.Options().Method)
	assert.Less(t, m.StepWeightBytes(), m.WeightBytes(), "stories260K has its own output matrix: the embedding is not read whole")
	assert.Positive(t, m.WorkspaceBytes())
}

package model

import (
	"fmt"
	"time"

	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// Timing selects the GPU timestamps Forward records, for benchmarks.
type Timing int

const (
	// TimingOff records no timestamps (the default).
	TimingOff Timing = iota
	// TimingStep records one timestamp at the start and one at the end of
	// every submission: the step's GPU time with the least disturbance.
	TimingStep
	// TimingAttention also records one before and one after every layer's
	// attention dispatches, to measure attention's share of the step. The
	// extra timestamps wait for the work before them, so the step runs a
	// little slower than under TimingStep.
	TimingAttention
)

// StepTimes is the GPU time of the last Forward, summed over its
// submissions (chunks), from timestamps: all of it, and its attention
// dispatches (TimingAttention only).
type StepTimes struct {
	GPU, Attention time.Duration
}

// SetTiming selects the timestamps later Forward calls record.
func (m *Model) SetTiming(t Timing) { m.timing = t }

// LastTimes returns the GPU times of the last Forward (zero with
// TimingOff).
func (m *Model) LastTimes() StepTimes { return m.times }

// SetMethod switches the tree-attention method of later Forward calls
// (same model, only the attention differs).
func (m *Model) SetMethod(method treeattn.Method) error {
	if _, err := treeattn.ParseMethod(string(method)); err != nil {
		return fmt.Errorf("model: set method: %w", err)
	}
	m.opts.Method = method
	return nil
}

// stamp records a timestamp when timing is at least level.
func (m *Model) stamp(level Timing, label string) error {
	if m.timing < level {
		return nil
	}
	return m.rec.Timestamp(label)
}

// addTimes adds the timestamps of the submission just waited for:
// consecutive "attn"/"attn-end" pairs to Attention, first to last to GPU.
func (m *Model) addTimes() error {
	if m.timing == TimingOff {
		return nil
	}
	ts, err := m.rec.Timestamps()
	if err != nil {
		return err
	}
	if len(ts) < 2 {
		return nil
	}
	m.times.GPU += time.Duration(ts[len(ts)-1] - ts[0])
	if m.timing >= TimingAttention {
		for i := 1; i+1 < len(ts); i += 2 {
			m.times.Attention += time.Duration(ts[i+1] - ts[i])
		}
	}
	return nil
}

// WorkspaceBytes is the device memory the model holds besides its weights
// now: activations of a chunk, logit rows and the attention workspace
// (they grow with the batches seen so far).
func (m *Model) WorkspaceBytes() uint64 {
	s := &m.s
	var n uint64
	for _, b := range []*vk.Buffer{s.tokens, s.pos, s.h, s.xn, s.q, s.k, s.v, s.att, s.gate, s.up, s.hsel, s.xsel, s.logits, m.outNorm, m.invFreq} {
		if b != nil {
			n += b.Size()
		}
	}
	for _, l := range m.layers {
		n += l.attnNorm.Size() + l.ffnNorm.Size()
	}
	if m.ws != nil {
		n += m.ws.Bytes()
	}
	return n
}

// StepWeightBytes is the device memory of the weights a decoding step
// reads in full: every layer matrix and the output matrix. The token
// embedding is only gathered (a row per token) unless it is also the
// output matrix.
func (m *Model) StepWeightBytes() uint64 {
	n := m.WeightBytes()
	if m.output != m.embd {
		n -= m.embd.bytes()
	}
	return n
}

package model

import (
	"fmt"
	"slices"
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
	// TimingKernels also records one after every kind of work in every
	// layer (Q/K/V, RoPE, the K/V write, attention, output projection,
	// gate/up, down, logits): where a step's time goes. Every timestamp
	// waits for the work before it, so the step runs slower still.
	TimingKernels
)

// StepTimes is the GPU time of the last Forward, summed over its
// submissions (chunks), from timestamps: all of it, and its attention
// dispatches (TimingAttention only).
type StepTimes struct {
	GPU, Attention time.Duration
	// Kernels is the GPU time of each kind of work, summed over layers and
	// submissions (TimingKernels only), in the order first recorded.
	Kernels []KernelTime
}

// KernelTime is the GPU time of one kind of work in a step.
type KernelTime struct {
	Name string
	Time time.Duration
}

// Labels of the timestamps Forward records: each one ends the interval of
// the work named by it.
const (
	stampStart   = "start"
	stampAttn    = "attn"      // before a layer's attention
	stampAttnEnd = "attention" // after it
	stampEnd     = "end"
)

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
	if m.timing < level || label == "" {
		return nil
	}
	return m.rec.Timestamp(label)
}

// addTimes adds the timestamps of the submission just waited for:
// the intervals ending at an attention label to Attention, first to last to
// GPU, and with TimingKernels every interval to the kind of work its end
// label names.
func (m *Model) addTimes() error {
	if m.timing == TimingOff {
		return nil
	}
	spans, err := m.rec.Timings()
	if err != nil {
		return err
	}
	for _, sp := range spans {
		m.times.GPU += sp.Elapsed
		if sp.To == stampAttnEnd {
			m.times.Attention += sp.Elapsed
		}
		if m.timing < TimingKernels || sp.To == stampAttn || sp.To == stampEnd {
			continue
		}
		i := slices.IndexFunc(m.times.Kernels, func(k KernelTime) bool { return k.Name == sp.To })
		if i < 0 {
			m.times.Kernels = append(m.times.Kernels, KernelTime{Name: sp.To})
			i = len(m.times.Kernels) - 1
		}
		m.times.Kernels[i].Time += sp.Elapsed
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

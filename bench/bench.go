// Package bench times tree-attention methods on a device over decoding
// workloads: single-step snapshot trees (the Targets table) and
// multi-step replays (few-shot, Tree-of-Thoughts traces, speculative
// decoding) from package replay, sampled at evenly spaced steps.
//
// For every sampled step and method it plans the step on the host (timed),
// then times one layer's partial attention and reduction between GPU
// timestamps, with the L2 cache flushed before every timed run (a fill of a
// buffer larger than any L2, 256 MiB by default) so K/V come from memory as
// in a real model; the layer time is the median of the runs. Every layer of
// a model has the same shape and sees the same tree, so one layer is timed
// and a step's attention time is Layers x that median. Before a method is
// timed its output on the first sampled step is checked against the
// float64 CPU reference; a method that fails is reported as failed and not
// timed.
package bench

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// MaxRuns is the most timed runs per measurement: each run takes three GPU
// timestamps and a command buffer holds 512.
const MaxRuns = 170

// DefaultFlushBytes is the L2 flush buffer size (capped by the device's
// storage buffer range).
const DefaultFlushBytes = 256 << 20

// DefaultWarmUp is how long the recorded runs are replayed before the timed
// replay: GPUs lower their clocks while the host plans and checks. On the
// H200 (session 5) steps ran up to 3.5x slower for about half a second of
// load after the host had kept the GPU idle for a few seconds (building a
// tree's K/V, loading a model), so 300 ms were not always enough.
const DefaultWarmUp = 1500 * time.Millisecond

// Options control a measurement.
type Options struct {
	Runs       int           // timed runs per step and method, median reported (default 20, at most MaxRuns)
	FlushBytes uint64        // L2 flush buffer (default DefaultFlushBytes, capped by the device)
	WarmUp     time.Duration // replay before timing (default DefaultWarmUp; negative: none)
	Block      int           // treeattn.Config.BlockTokens (0: automatic)
	MaxPasses  int           // treeattn.Config.MaxPasses (0: default)
	Tiles      treeattn.Tiles
	// Reduce is treeattn.Config.Reduce ("": auto).
	Reduce string
	// Tolerance is the largest relative L2 error accepted by the check
	// (0: conformance.Tolerance of the KV type).
	Tolerance float64
}

func (o *Options) defaults(d *vk.Device) error {
	if o.Runs == 0 {
		o.Runs = 20
	}
	if o.Runs < 1 || o.Runs > MaxRuns {
		return fmt.Errorf("runs %d: want 1..%d", o.Runs, MaxRuns)
	}
	if o.FlushBytes == 0 {
		o.FlushBytes = DefaultFlushBytes
	}
	o.FlushBytes = min(o.FlushBytes, uint64(d.Info.MaxStorageBufferRange)) &^ 3
	if o.FlushBytes < 4 {
		return fmt.Errorf("flush buffer of %d bytes", o.FlushBytes)
	}
	if o.WarmUp == 0 {
		o.WarmUp = DefaultWarmUp
	}
	if o.Tolerance < 0 || math.IsNaN(o.Tolerance) {
		return fmt.Errorf("tolerance %v", o.Tolerance)
	}
	return nil
}

// buffers holds one step's device inputs, shared by the methods.
type buffers struct {
	q, k, v, out *vk.Buffer
}

func (b *buffers) close() {
	for _, x := range []*vk.Buffer{b.q, b.k, b.v, b.out} {
		if x != nil {
			x.Close()
		}
	}
}

func upload(d *vk.Device, in *conformance.Inputs, kv treeattn.KVType, queryBytes uint64) (*buffers, error) {
	b := &buffers{}
	var err error
	if b.q, err = d.NewBuffer(queryBytes); err != nil {
		return nil, err
	}
	if err = b.q.WriteF32(0, in.Q); err != nil {
		b.close()
		return nil, err
	}
	if b.k, err = treeattn.UploadKV(d, kv, in.K, in.KBits); err != nil {
		b.close()
		return nil, err
	}
	if b.v, err = treeattn.UploadKV(d, kv, in.V, in.VBits); err != nil {
		b.close()
		return nil, err
	}
	if b.out, err = d.NewBuffer(queryBytes); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// nanBits poisons outputs before a check: a kernel that skips an output
// leaves NaN, which fails the comparison.
const nanBits = 0x7fc00000

// check runs the plan once on poisoned output and returns the relative L2
// error against want.
func check(d *vk.Device, dp *treeattn.DevicePlan, b *buffers, want []float64) (float64, error) {
	rec, err := d.NewRecorder()
	if err != nil {
		return 0, err
	}
	defer rec.Close()
	if err := rec.Fill(b.out, nanBits); err != nil {
		return 0, err
	}
	rec.Barrier()
	if err := dp.Run(rec, b.q, b.k, b.v, b.out); err != nil {
		return 0, err
	}
	if err := rec.Submit(); err != nil {
		return 0, err
	}
	got := make([]float32, len(want))
	if err := b.out.ReadF32(0, got); err != nil {
		return 0, err
	}
	return treeattn.RelativeL2(got, want), nil
}

// layerTimes is one layer's timing: the median, 10th and 90th percentile of
// the runs, and the median of the reduction's share.
type layerTimes struct {
	median, reduce, p10, p90 time.Duration
}

// timeLayer records opts.Runs runs of [flush, timestamp, partial attention,
// timestamp, reduction, timestamp], replays them for opts.WarmUp, then once
// more for the timestamps.
func timeLayer(d *vk.Device, dp *treeattn.DevicePlan, b *buffers, flush *vk.Buffer, opts Options) (layerTimes, error) {
	rec, err := d.NewRecorder()
	if err != nil {
		return layerTimes{}, err
	}
	defer rec.Close()
	for i := 0; i < opts.Runs; i++ {
		rec.Barrier()
		if err := rec.Fill(flush, uint32(i)); err != nil {
			return layerTimes{}, err
		}
		rec.Barrier()
		if err := rec.Timestamp("start"); err != nil {
			return layerTimes{}, err
		}
		if err := dp.RunPartial(rec, b.q, b.k, b.v, b.out); err != nil {
			return layerTimes{}, err
		}
		if err := rec.Timestamp("partial"); err != nil {
			return layerTimes{}, err
		}
		if err := dp.RunReduce(rec, b.out); err != nil {
			return layerTimes{}, err
		}
		if err := rec.Timestamp("end"); err != nil {
			return layerTimes{}, err
		}
	}
	if opts.WarmUp > 0 {
		for warm := time.Now(); time.Since(warm) < opts.WarmUp; {
			if err := rec.Submit(); err != nil {
				return layerTimes{}, err
			}
		}
	}
	if err := rec.Submit(); err != nil {
		return layerTimes{}, err
	}
	ts, err := rec.Timestamps()
	if err != nil {
		return layerTimes{}, err
	}
	var times, reduce []time.Duration
	for i := 0; i+2 < len(ts); i += 3 {
		times = append(times, time.Duration(ts[i+2]-ts[i]))
		reduce = append(reduce, time.Duration(ts[i+2]-ts[i+1]))
	}
	if len(times) == 0 {
		return layerTimes{}, fmt.Errorf("no timestamps")
	}
	slices.Sort(times)
	slices.Sort(reduce)
	return layerTimes{
		median: times[len(times)/2],
		reduce: reduce[len(reduce)/2],
		p10:    times[len(times)/10],
		p90:    times[len(times)*9/10],
	}, nil
}

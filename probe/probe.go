// Package probe measures a device's two rooflines: memory bandwidth with a
// copy kernel and fp32 FMA throughput with register-only chains. Benchmarks
// report their fraction of both.
package probe

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/vk"
)

// Options size the measurement.
type Options struct {
	// Bytes per buffer (source and destination each); 0 picks DefaultBytes.
	Bytes uint64
	// Runs is how many timed copies to take the median of (0: 20; at most
	// MaxRuns).
	Runs int
	// Workgroup is the copy kernel's workgroup size (default 256).
	Workgroup uint32
}

// Result is one bandwidth measurement.
type Result struct {
	Device      string  `json:"device"`
	UUID        string  `json:"uuid"`
	Driver      string  `json:"driver"`
	BufferBytes uint64  `json:"buffer_bytes"`
	Runs        int     `json:"runs"`
	MedianNs    int64   `json:"median_ns"`
	BestNs      int64   `json:"best_ns"`
	BytesPerSec float64 `json:"bytes_per_second"` // (read + written) / median GPU time
	PeakPerSec  float64 `json:"peak_bytes_per_second"`
	SaxpyPerSec float64 `json:"saxpy_bytes_per_second"`
	// FMAFlopsPerSec is the fp32 FMA throughput (2 flops per FMA), median
	// of Runs; 0 in results saved before it was measured.
	FMAFlopsPerSec float64   `json:"fma_flops_per_second,omitempty"`
	When           time.Time `json:"when"`
	TimingSource   string    `json:"timing_source"`
}

// MaxRuns is the most timed runs of one probe: each kernel's runs, one
// untimed run and a final timestamp share one command buffer's
// vk.MaxTimestamps timestamps.
const MaxRuns = vk.MaxTimestamps - 2

// DefaultBytes is the buffer size Run uses by default on a device: 256 MiB,
// far larger than any GPU cache, or less when device memory (an eighth of
// it) or the storage buffer range is smaller. A roofline saved for
// benchmarks needs buffers at least this large: smaller ones may be served
// from a cache.
func DefaultBytes(info *vk.DeviceInfo) uint64 {
	b := uint64(256 << 20)
	var local uint64
	for _, h := range info.MemoryHeaps {
		if h.DeviceLocal {
			local = max(local, h.Size)
		}
	}
	if local > 0 && b > local/8 {
		b = local / 8
	}
	return min(b, uint64(info.MaxStorageBufferRange)) &^ 15
}

// Run measures d's bandwidth.
func Run(d *vk.Device, opts Options) (*Result, error) {
	if opts.Runs == 0 {
		opts.Runs = 20
	}
	if opts.Runs < 0 || opts.Runs > MaxRuns {
		return nil, fmt.Errorf("probe: %d runs: want 1..%d", opts.Runs, MaxRuns)
	}
	if opts.Workgroup == 0 {
		opts.Workgroup = 256
	}
	if opts.Bytes == 0 {
		opts.Bytes = DefaultBytes(&d.Info)
	}
	opts.Bytes = min(opts.Bytes, uint64(d.Info.MaxStorageBufferRange)) &^ 15
	if opts.Bytes < 1<<20 {
		return nil, fmt.Errorf("probe: buffers of %d bytes are too small to measure memory bandwidth", opts.Bytes)
	}
	if !d.Info.Timestamps {
		return nil, fmt.Errorf("probe: device %s has no compute timestamps", d.Info.Name)
	}
	copyTimes, err := timeKernel(d, kernels.Copy, opts, func(n uint64) any {
		return kernels.CopyPush{N: uint32(n / 16)}
	}, 16)
	if err != nil {
		return nil, err
	}
	saxpyTimes, err := timeKernel(d, kernels.Saxpy, opts, func(n uint64) any {
		return kernels.SaxpyPush{N: uint32(n / 4), A: 0.5}
	}, 4)
	if err != nil {
		return nil, err
	}
	flops, err := timeFMA(d, opts)
	if err != nil {
		return nil, err
	}
	med, best := median(copyTimes), copyTimes[0]
	res := &Result{
		Device: d.Info.Name, UUID: d.Info.UUID, Driver: d.Info.DriverName + " " + d.Info.DriverInfo,
		BufferBytes: opts.Bytes, Runs: opts.Runs, MedianNs: med, BestNs: best,
		BytesPerSec:    float64(2*opts.Bytes) / (float64(med) * 1e-9),
		PeakPerSec:     float64(2*opts.Bytes) / (float64(best) * 1e-9),
		SaxpyPerSec:    float64(3*opts.Bytes) / (float64(median(saxpyTimes)) * 1e-9),
		FMAFlopsPerSec: flops,
		When:           time.Now().UTC(),
		TimingSource:   "GPU timestamps",
	}
	return res, nil
}

// timeKernel runs a grid-stride streaming kernel over two buffers Runs times
// in one command buffer, a timestamp after each, and returns sorted times.
func timeKernel(d *vk.Device, c *kernels.Contract, opts Options, push func(uint64) any, elem uint64) ([]int64, error) {
	name := c.Name
	k, err := c.Pipeline(d, kernels.SpecValues{"local_size_x": opts.Workgroup})
	if err != nil {
		return nil, err
	}
	src, err := d.NewBuffer(opts.Bytes)
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	defer src.Close()
	dst, err := d.NewBuffer(opts.Bytes)
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	defer dst.Close()
	n := opts.Bytes / elem
	groups := uint32(min((n+uint64(opts.Workgroup)-1)/uint64(opts.Workgroup), uint64(d.Info.MaxWorkgroupCount[0])))
	fill := func(rec *vk.Recorder) error {
		if err := rec.Fill(src, 0x3f800000); err != nil { // 1.0f: finite values for saxpy
			return err
		}
		return rec.Fill(dst, 0)
	}
	// One untimed warm-up run, then the timed ones.
	return timeDispatches(d, name, 1, opts.Runs, fill, func(rec *vk.Recorder) error {
		return k.Dispatch(rec, [3]uint32{groups, 1, 1}, push(opts.Bytes), src.All(), dst.All())
	})
}

// timeDispatches records prepare, then warmUp+runs runs of dispatch with a
// GPU timestamp before each and one after the last, in one command buffer;
// it submits it and returns the durations of the runs after the first
// warmUp, sorted.
func timeDispatches(d *vk.Device, name string, warmUp, runs int, prepare, dispatch func(*vk.Recorder) error) ([]int64, error) {
	rec, err := d.NewRecorder()
	if err != nil {
		return nil, err
	}
	defer rec.Close()
	if prepare != nil {
		if err := prepare(rec); err != nil {
			return nil, err
		}
	}
	for i := 0; i < warmUp+runs; i++ {
		if err := rec.Timestamp(fmt.Sprint(i)); err != nil {
			return nil, err
		}
		if err := dispatch(rec); err != nil {
			return nil, err
		}
	}
	if err := rec.Timestamp("end"); err != nil {
		return nil, err
	}
	if err := rec.Submit(); err != nil {
		return nil, fmt.Errorf("probe %s: %w", name, err)
	}
	tm, err := rec.Timings()
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, t := range tm[warmUp:] {
		out = append(out, t.Elapsed.Nanoseconds())
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	if out[0] <= 0 {
		return nil, fmt.Errorf("probe %s: GPU timestamps did not advance", name)
	}
	return out, nil
}

// fmaGroups is the FMA probe's grid: far more workgroups than any GPU runs
// at once, so every multiprocessor stays busy to the end.
const fmaGroups = 8192

// timeFMA measures fp32 FMA throughput with fma_peak.comp. A calibration
// run sizes the iteration count so one timed run lasts about 2 ms (long
// against launch overhead, short on CPU devices).
func timeFMA(d *vk.Device, opts Options) (float64, error) {
	k, err := kernels.FMAPeak.Pipeline(d, kernels.SpecValues{"local_size_x": opts.Workgroup})
	if err != nil {
		return 0, err
	}
	invocations := uint64(fmaGroups) * uint64(opts.Workgroup)
	out, err := d.NewBuffer(16 * invocations)
	if err != nil {
		return 0, fmt.Errorf("probe fma: %w", err)
	}
	defer out.Close()
	run := func(iters uint32, runs int) ([]int64, error) {
		push := kernels.FMAPeakPush{Iters: iters, A: 0.999, B: 1e-3}
		return timeDispatches(d, "fma", 0, runs, nil, func(rec *vk.Recorder) error {
			return k.Dispatch(rec, [3]uint32{fmaGroups, 1, 1}, push, out.All())
		})
	}
	const calib = 4
	ns, err := run(calib, 2)
	if err != nil {
		return 0, err
	}
	iters := uint32(min(max(float64(calib)*2e6/float64(ns[0]), 1), 1<<16))
	ns, err = run(iters, opts.Runs+1)
	if err != nil {
		return 0, err
	}
	const flopsPerIter = 64 * 2
	return float64(invocations) * float64(iters) * flopsPerIter / (float64(median(ns)) * 1e-9), nil
}

func median(sorted []int64) int64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// CachePath is where the last probe of a device is saved for benchmarks.
func CachePath(uuid string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "deft-vk", "probe-"+uuid+".json"), nil
}

// Save stores r for later runs of the benchmarks.
func Save(r *Result) error {
	p, err := CachePath(r.UUID)
	if err != nil {
		return fmt.Errorf("save probe: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("save probe: %w", err)
	}
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return fmt.Errorf("save probe: %w", err)
	}
	return nil
}

// Load returns the saved probe of the device with uuid.
func Load(uuid string) (*Result, error) {
	p, err := CachePath(uuid)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("load probe %s: %w", p, err)
	}
	if r.UUID != uuid || r.BytesPerSec <= 0 {
		return nil, fmt.Errorf("load probe %s: not a result for device %s", p, uuid)
	}
	return &r, nil
}

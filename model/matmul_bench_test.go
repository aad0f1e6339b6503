package model

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/modelgen"
	"github.com/deft-vk/deft/probe"
	"github.com/deft-vk/deft/vk"
)

// decodeMatmulSweep is the workgroup shapes (rows x invocations, /u chunks
// per loop iteration, /b the former byte-by-byte quant conversion)
// BenchmarkDecodeMatmuls applies to every matrix of a step on a GPU; a
// zero row count is matmulShapeFor's choice per matrix ("auto"); 4x128/b
// is the kernel as it was (fixed default shape, former conversion).
var decodeMatmulSweep = []matmulShape{{}, {byteConv: true}, {4, 128, 1, true}, {4, 128, 1, false}, {2, 128, 1, false},
	{8, 128, 1, false}, {16, 64, 1, false}, {4, 256, 2, false}, {8, 64, 2, false}}

// String is rows x invocations ("auto": matmulShapeFor), /u for u chunks
// per loop iteration, /b for the byte-by-byte quant conversion.
func (s matmulShape) String() string {
	str := "auto"
	if s.rows > 0 {
		str = fmt.Sprintf("%dx%d", s.rows, s.group)
	}
	if s.unroll > 1 {
		str += fmt.Sprintf("/u%d", s.unroll)
	}
	if s.byteConv {
		str += "/b" // the former byte-by-byte conversion of quants
	}
	return str
}

// benchOps caches the benchmark's ops per workgroup shape, so that each
// pipeline is created once.
var benchOps = map[matmulShape]*ops{}

func opsFor(d *vk.Device, ms matmulShape) *ops {
	o := benchOps[ms]
	if o == nil || o.d != d {
		o = newOps(d)
		o.mm = ms
		benchOps[ms] = o
	}
	return o
}

// mmCall is one matmul dispatch of a decoding step, as Forward records it.
type mmCall struct {
	kind string // qkv+norm, v+norm (a separate V of another type), o+add, gateup+norm+glu, down+add, output+norm
	w    *weight
	x    *vk.Buffer
	ys   []*vk.Buffer
	add  bool
	norm *vk.Buffer
}

// decodeCalls lists the matmuls of one decoding step of m for n tokens in
// Forward's order, with the scratch buffers of the step (allocated here,
// closed at the end of b).
func decodeCalls(b *testing.B, m *Model, n int) []mmCall {
	c := m.cfg
	r := rand.New(rand.NewPCG(5, 6))
	buf := func(floats int) *vk.Buffer {
		bb, err := m.d.NewBuffer(uint64(4 * floats))
		if err == nil {
			err = bb.WriteF32(0, randFloats(r, floats, 1))
		}
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(bb.Close)
		return bb
	}
	h, att := buf(n*c.Embd), buf(n*c.Embd)
	q, k, v := buf(n*c.Heads*c.HeadDim), buf(n*c.KVHeads*c.HeadDim), buf(n*c.KVHeads*c.HeadDim)
	g, logits := buf(n*c.FFN), buf(n*c.Vocab)
	var calls []mmCall
	for _, l := range m.layers {
		if len(l.qkv) == 0 || l.gateUp == nil {
			b.Fatal("model with layers without stacked Q/K/V or gate/up")
		}
		outs := []*vk.Buffer{q, k, v}
		seg := 0 // Q/K/V are split by type where they differ (Q4_K_M's V)
		for _, w := range l.qkv {
			ns := len(w.segs)
			if seg+ns > 3 {
				b.Fatalf("layer with %d+%d Q/K/V segments", seg, ns)
			}
			kind := "qkv"[seg:seg+ns] + "+norm"
			calls = append(calls, mmCall{kind: kind, w: w, x: h, ys: outs[seg : seg+ns], norm: l.attnNorm})
			seg += ns
		}
		calls = append(calls, mmCall{kind: "o+add", w: l.o, x: att, ys: []*vk.Buffer{h}, add: true},
			mmCall{kind: "gateup+norm+glu", w: l.gateUp, x: h, ys: []*vk.Buffer{g}, norm: l.ffnNorm},
			mmCall{kind: "down+add", w: l.down, x: g, ys: []*vk.Buffer{h}, add: true})
	}
	return append(calls, mmCall{kind: "output+norm", w: m.output, x: h, ys: []*vk.Buffer{logits}, norm: m.outNorm})
}

// decodeTimes records calls `runs` times in one command buffer, with a GPU
// timestamp after each dispatch when inner, submits it once to warm up and
// `subs` times to measure, and returns the median over all runs of each
// interval (inner: one per call, else one per run: the whole step).
func decodeTimes(d *vk.Device, o *ops, calls []mmCall, n int, eps float64, inner bool, runs, subs int) ([]time.Duration, error) {
	rec, err := d.NewRecorder()
	if err != nil {
		return nil, err
	}
	defer rec.Close()
	for range runs {
		rec.Barrier()
		if err := rec.Timestamp("start"); err != nil {
			return nil, err
		}
		for _, c := range calls {
			if err := o.matmulFused(rec, c.w, c.x, n, c.ys, c.add, c.norm, eps); err != nil {
				return nil, err
			}
			if inner {
				if err := rec.Timestamp(c.kind); err != nil {
					return nil, err
				}
			}
		}
		if !inner {
			if err := rec.Timestamp("end"); err != nil {
				return nil, err
			}
		}
	}
	if err := rec.Submit(); err != nil { // warm-up (pipelines, clocks)
		return nil, err
	}
	per := 1
	if inner {
		per = len(calls)
	}
	samples := make([][]time.Duration, per)
	for range subs {
		if err := rec.Submit(); err != nil {
			return nil, err
		}
		ts, err := rec.Timestamps()
		if err != nil {
			return nil, err
		}
		for run := range runs {
			base := run * (per + 1)
			for i := range per {
				samples[i] = append(samples[i], time.Duration(ts[base+i+1]-ts[base+i]))
			}
		}
	}
	med := make([]time.Duration, per)
	for i, s := range samples {
		slices.Sort(s)
		med[i] = s[len(s)/2]
	}
	return med, nil
}

// timeAfterFlush is the former isolated measurement, kept to show what it
// measured: the median GPU time of one matmul after an L2 flush by a fill
// of flush and a copy of its first half to its second, the timestamps
// bracketing the matmul alone.
func timeAfterFlush(d *vk.Device, o *ops, c mmCall, n int, eps float64, flush *vk.Buffer) (time.Duration, error) {
	rec, err := d.NewRecorder()
	if err != nil {
		return 0, err
	}
	defer rec.Close()
	const runs = 9
	half := flush.Size() / 2 &^ 15
	for i := range runs {
		rec.Barrier()
		if err := rec.Fill(flush, uint32(i)); err != nil {
			return 0, err
		}
		rec.Barrier()
		if err := rec.CopyRange(flush, half, flush, 0, half); err != nil {
			return 0, err
		}
		rec.Barrier()
		if err := rec.Timestamp("start"); err != nil {
			return 0, err
		}
		if err := o.matmulFused(rec, c.w, c.x, n, c.ys, c.add, c.norm, eps); err != nil {
			return 0, err
		}
		if err := rec.Timestamp("end"); err != nil {
			return 0, err
		}
	}
	if err := rec.Submit(); err != nil {
		return 0, err
	}
	if err := rec.Submit(); err != nil {
		return 0, err
	}
	ts, err := rec.Timestamps()
	if err != nil {
		return 0, err
	}
	var times []time.Duration
	for i := 0; i+1 < len(ts); i += 2 {
		times = append(times, time.Duration(ts[i+1]-ts[i]))
	}
	slices.Sort(times)
	return times[len(times)/2], nil
}

// kindTime is the time and weight bytes of one kind of matmul in a step.
type kindTime struct {
	t     time.Duration
	calls int
	bytes float64
}

// BenchmarkDecodeMatmuls times the matmuls of one single-sequence decoding
// step of a random model made on the device by LoadRandom (Llama-3-8B on a
// GPU, its real weights' layout: Q/K/V stacked with the attention norm
// fused, o with the residual add, gate/up stacked with the FFN norm and
// SwiGLU fused, down with the residual add, the output matrix with the
// output norm), recorded in one command buffer as Forward records them
// (barriers between dependent dispatches included), for the weight types
// f16, q8_0 and q4_k_m (modelgen's recipes, as `deft bench generate`).
//
// Each step is timed twice: whole (5 runs per command buffer, 3
// submissions, median) and with a GPU timestamp after every dispatch, which
// splits the step into its matmuls; the per-kind sums of the second add up
// to its step time by construction, so the per-matrix figures are the ones
// a real step sees (no L2 flush, no isolated dispatch). Printed per type,
// n and workgroup shape: the step time against the weight-read floor
// (weight bytes / `deft probe`'s copy bandwidth, else 4169 GB/s), and per
// kind of matmul its time per step, per call and GB/s of weights. On a GPU
// the shapes of decodeMatmulSweep are applied to every matrix ("auto" is
// matmulShapeFor's choice per matrix), and the summary gives the best
// shape per kind and the step that choice would make. Finally each kind's
// first matrix is timed alone after the former benchmark's L2 flush (a
// fill and a copy), next to its in-step time.
//
//	go test -run '^$' -bench DecodeMatmuls -benchtime 1x ./model/
//
// DEFT_MATMUL_TYPES=f16,q4_k_m limits the types, DEFT_MATMUL_NS=1,4,8 sets
// the token counts (default 1), DEFT_MATMUL_SHAPE the model shape
// (modelgen; default llama3-8b, tiny on a CPU device, which only runs
// "auto" unless DEFT_MATMUL_SWEEP is set).
func BenchmarkDecodeMatmuls(b *testing.B) {
	d := gputest.Device(b)
	if !d.Info.Timestamps {
		b.Fatalf("device %s has no compute timestamps", d.Info.Name)
	}
	cpu := d.Info.Type == vk.TypeCPU
	shapeName := os.Getenv("DEFT_MATMUL_SHAPE")
	if shapeName == "" {
		shapeName = "llama3-8b"
		if cpu {
			shapeName = "tiny"
		}
	}
	cfg, err := modelgen.ShapeConfig(shapeName)
	if err != nil {
		b.Fatal(err)
	}
	types := []string{"f16", "q8_0", "q4_k_m"}
	if s := os.Getenv("DEFT_MATMUL_TYPES"); s != "" {
		types = strings.Split(s, ",")
	}
	ns := []int{1}
	if s := os.Getenv("DEFT_MATMUL_NS"); s != "" {
		ns = nil
		for _, f := range strings.Split(s, ",") {
			var n int
			if _, err := fmt.Sscan(f, &n); err != nil || n < 1 || n > matmulMaxCols {
				b.Fatalf("DEFT_MATMUL_NS: %q is not a token count in 1..%d", f, matmulMaxCols)
			}
			ns = append(ns, n)
		}
	}
	shapes := decodeMatmulSweep
	if cpu && os.Getenv("DEFT_MATMUL_SWEEP") == "" {
		shapes = shapes[:1]
	}
	floor := 4169e9
	floorSrc := "4169 GB/s (H200 copy bandwidth; run `deft probe` to measure this device)"
	if p, err := probe.Load(d.Info.UUID); err == nil {
		floor, floorSrc = p.BytesPerSec, fmt.Sprintf("%.0f GB/s (deft probe of this device)", p.BytesPerSec/1e9)
	}
	flush, err := d.NewBuffer(min(256<<20, uint64(d.Info.MaxStorageBufferRange)) &^ 15)
	if err != nil {
		b.Fatal(err)
	}
	defer flush.Close()
	var rep []string
	report := func(format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		fmt.Println(s)
		rep = append(rep, s)
	}
	report("decode matmuls of %s, floor %s", shapeName, floorSrc)
	for _, typ := range types {
		tt, err := modelgen.TensorTypes(typ, cfg)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		m, err := LoadRandom(d, RandomSpec{Config: cfg, TensorType: tt, Seed: 1}, Options{})
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("%s: LoadRandom %.2f s\n", typ, time.Since(start).Seconds())
		for _, n := range ns {
			b.Run(fmt.Sprintf("%s/n=%d", typ, n), func(b *testing.B) {
				calls := decodeCalls(b, m, n)
				var bytes float64
				var order []string
				for _, c := range calls {
					bytes += float64(c.w.dataBytes())
					if !slices.Contains(order, c.kind) {
						order = append(order, c.kind)
					}
				}
				runs := max(1, min(5, (vk.MaxTimestamps-1)/(len(calls)+1)))
				bestKind := map[string]kindTime{}
				bestShape := map[string]matmulShape{}
				var autoKinds map[string]kindTime
				var bestStep time.Duration
				for range b.N {
					for _, ms := range shapes {
						o := opsFor(d, ms)
						whole, err := decodeTimes(d, o, calls, n, cfg.RMSEps, false, 5, 3)
						if err != nil {
							b.Fatal(err)
						}
						parts, err := decodeTimes(d, o, calls, n, cfg.RMSEps, true, runs, 3)
						if err != nil {
							b.Fatal(err)
						}
						kinds := map[string]kindTime{}
						var sum time.Duration
						for i, c := range calls {
							k := kinds[c.kind]
							k.t += parts[i]
							k.calls++
							k.bytes += float64(c.w.dataBytes())
							kinds[c.kind] = k
							sum += parts[i]
						}
						step := whole[0]
						line := fmt.Sprintf("%-6s n=%d %-9v step %7.3f ms = %.2fx floor %.3f ms (%4.0f GB/s); split by timestamps %7.3f ms:",
							typ, n, ms, step.Seconds()*1e3, step.Seconds()*floor/bytes, bytes/floor*1e3, bytes/step.Seconds()/1e9,
							sum.Seconds()*1e3)
						for _, name := range order {
							k := kinds[name]
							line += fmt.Sprintf(" | %s %dx %.1f us = %.0f us %4.0f GB/s", name, k.calls,
								k.t.Seconds()*1e6/float64(k.calls), k.t.Seconds()*1e6, k.bytes/k.t.Seconds()/1e9)
							if cur, ok := bestKind[name]; !ok || k.t < cur.t {
								bestKind[name], bestShape[name] = k, ms
							}
						}
						fmt.Println(line)
						rep = append(rep, line)
						if ms == (matmulShape{}) {
							autoKinds = kinds
						}
						if bestStep == 0 || step < bestStep {
							bestStep = step
						}
					}
				}
				if len(shapes) > 1 {
					var sum time.Duration
					line := fmt.Sprintf("%-6s n=%d best shape per kind:", typ, n)
					for _, name := range order {
						k := bestKind[name]
						sum += k.t
						line += fmt.Sprintf(" | %s %v %.0f us %4.0f GB/s (auto %.0f us)", name, bestShape[name], k.t.Seconds()*1e6,
							k.bytes/k.t.Seconds()/1e9, autoKinds[name].t.Seconds()*1e6)
					}
					report("%s; sum %.3f ms = %.2fx floor", line, sum.Seconds()*1e3, sum.Seconds()*floor/bytes)
				}
				// The former isolated measurement, for comparison.
				line := fmt.Sprintf("%-6s n=%d alone after a fill+copy L2 flush (auto shape) vs in the step:", typ, n)
				seen := map[string]bool{}
				for _, c := range calls {
					if seen[c.kind] {
						continue
					}
					seen[c.kind] = true
					t, err := timeAfterFlush(d, opsFor(d, matmulShape{}), c, n, cfg.RMSEps, flush)
					if err != nil {
						b.Fatal(err)
					}
					k := autoKinds[c.kind]
					line += fmt.Sprintf(" | %s %.1f us vs %.1f us", c.kind, t.Seconds()*1e6, k.t.Seconds()*1e6/float64(k.calls))
				}
				report("%s", line)
				b.ReportMetric(bestStep.Seconds()*1e3, "ms")
				b.ReportMetric(bestStep.Seconds()*floor/bytes, "x_floor")
				b.ReportMetric(0, "ns/op")
			})
		}
		m.Close()
	}
	fmt.Println()
	fmt.Println("summary:")
	for _, s := range rep {
		fmt.Println(s)
	}
}

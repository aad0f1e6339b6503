package model

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/modelgen"
	"github.com/deft-vk/deft/vk"
	"github.com/stretchr/testify/require"
)

// BenchmarkGemm times gemm in every variant the device runs and every tile
// of gemmBenchTiles, and matmul, at Llama-3-8B shapes (4096->4096,
// 4096->14336, 14336->4096; F16, Q4_0, Q8_0 weights; 16..512 activation
// rows): GPU timestamps around each dispatch, the L2 flushed before each
// (a 256 MiB fill), median of 10. Each result line reports TFLOP/s (2 n in
// out / time) and the weights' GB/s (weight bytes / time). Summaries
// follow: the fastest tile per shape and n against linear's choice; the
// tiles fastest over all shapes per weight type and n (what
// defaultGemmTiles should pick); probes of the default coopmat tile
// without global loads and/or without the MMA (which side bounds it) and
// with only the MMA (the tensor cores' throughput through the driver) or
// only the shared-memory matrix loads and the MMA (no tiles stored, no
// barriers);
// and the driver's compiler statistics (registers, spills) of every tile.
// -short runs small shapes (a smoke run on lavapipe).
//
//	go test -run '^$' -bench BenchmarkGemm -benchtime 1x ./model/
func BenchmarkGemm(b *testing.B) {
	d := gputest.Device(b)
	if !d.Info.Timestamps {
		b.Fatalf("%s has no compute timestamps", d.Info.Name)
	}
	r := gputest.Rand(b)
	types := []gguf.TensorType{gguf.F16, gguf.Q4_0, gguf.Q8_0}
	shapes := [][2]int{{4096, 4096}, {4096, 14336}, {14336, 4096}} // in, out
	ns := []int{16, 50, 64, 256, 512}
	reps, flushBytes := 10, uint64(256<<20)
	if testing.Short() {
		types, shapes, ns, reps, flushBytes = types[:2], [][2]int{{256, 320}}, []int{16, 50}, 2, 16<<20
	}
	flush, err := d.NewBuffer(flushBytes)
	require.NoError(b, err)
	defer flush.Close()
	maxN := slices.Max(ns)
	maxDimv := 0
	for _, s := range shapes {
		maxDimv = max(maxDimv, s[0], s[1])
	}
	xb, err := d.NewBuffer(uint64(4 * maxN * maxDimv))
	require.NoError(b, err)
	defer xb.Close()
	require.NoError(b, xb.WriteF32(0, randFloats(r, maxN*maxDimv, 1)))
	yb, err := d.NewBuffer(uint64(4 * maxN * maxDimv))
	require.NoError(b, err)
	defer yb.Close()
	o := newOps(d)
	defer o.close()

	type method struct {
		name   string
		record func(rec *vk.Recorder, w *weight, n int) error
	}
	methods := []method{
		{"matmul", func(rec *vk.Recorder, w *weight, n int) error { return o.matmul(rec, w, xb, n, yb, false) }},
		// What the model runs: gemm's default tile for n, or matmul.
		{"linear", func(rec *vk.Recorder, w *weight, n int) error { return o.linear(rec, w, xb, n, yb, false) }},
	}
	for _, variant := range gemmVariants(b, d) {
		sets := gemmBenchTiles[variant]
		// Split-K chosen automatically (Split 0), and off for the first two.
		for i := range min(2, len(sets)) {
			t := sets[i]
			t.Split = 1
			sets = append(sets, t)
		}
		for _, tiles := range sets {
			methods = append(methods, method{
				name: variant + "-" + tiles.String(),
				record: func(rec *vk.Recorder, w *weight, n int) error {
					return o.gemm(rec, variant, tiles, w, xb, n, yb, false)
				},
			})
		}
	}
	coopmat := slices.Contains(gemmVariants(b, d), "coopmat")

	var summary, probes, stats []string
	// Per weight type and n: each tile's time summed over the shapes, to
	// pick defaultGemmTiles from.
	type key struct {
		typ gguf.TensorType
		n   int
	}
	sums := map[key]map[string]float64{}
	for _, typ := range types {
		for _, sh := range shapes {
			in, out := sh[0], sh[1]
			w := benchWeight(b, d, typ, in, out)
			wBytes := float64(out * w.rowBytes)
			// The single-sequence decoding step: matmul over one row.
			var one time.Duration
			b.Run(fmt.Sprintf("%s/%dx%d/n=1/matmul", typ, in, out), func(b *testing.B) {
				for range b.N {
					one = timeDispatch(b, d, flush, reps, func(rec *vk.Recorder) error { return o.matmul(rec, w, xb, 1, yb, false) })
				}
				b.ReportMetric(us(one), "us")
				b.ReportMetric(wBytes/one.Seconds()/1e9, "wGB/s")
				b.ReportMetric(0, "ns/op")
			})
			for _, n := range ns {
				flops := 2 * float64(n) * float64(in) * float64(out)
				k := key{typ, n}
				if sums[k] == nil {
					sums[k] = map[string]float64{}
				}
				best, bestName := 0.0, ""
				var bestT, mmT, linT time.Duration
				for _, m := range methods {
					name := fmt.Sprintf("%s/%dx%d/n=%d/%s", typ, in, out, n, m.name)
					b.Run(name, func(b *testing.B) {
						var med time.Duration
						for range b.N {
							med = timeDispatch(b, d, flush, reps, func(rec *vk.Recorder) error { return m.record(rec, w, n) })
						}
						sec := med.Seconds()
						tf := flops / sec / 1e12
						b.ReportMetric(us(med), "us")
						b.ReportMetric(tf, "TFLOP/s")
						b.ReportMetric(wBytes/sec/1e9, "wGB/s")
						b.ReportMetric(0, "ns/op")
						switch {
						case m.name == "matmul":
							mmT = med
						case m.name == "linear":
							linT = med
						default:
							sums[k][m.name] += us(med)
							if tf > best {
								best, bestName, bestT = tf, m.name, med
							}
						}
					})
				}
				summary = append(summary, fmt.Sprintf("%-5s %5dx%-5d n=%-3d best %7.1f us %6.1f TF %5.0f wGB/s %-30s | linear %7.1f us %6.1f TF (%4.2fx best) | matmul %7.1f us (n=1: %.1f us)",
					typ, in, out, n, us(bestT), best, wBytes/bestT.Seconds()/1e9, bestName,
					us(linT), flops/linT.Seconds()/1e12, linT.Seconds()/bestT.Seconds(), us(mmT), us(one)))
			}
			// Which side bounds the default tile: the same dispatch without
			// global loads, without the MMA, and without both.
			if coopmat && typ == gguf.F16 && !testing.Short() {
				for _, n := range []int{64, 512} {
					t := defaultGemmTiles("coopmat", n, w.wtype)
					line := fmt.Sprintf("probe %-5s %5dx%-5d n=%-3d %-22s", typ, in, out, n, t)
					for _, probe := range []int{0, 1, 2, 3, 4, 8} {
						t.Probe = probe
						var med time.Duration
						b.Run(fmt.Sprintf("%s/%dx%d/n=%d/probe-%s", typ, in, out, n, t), func(b *testing.B) {
							for range b.N {
								med = timeDispatch(b, d, flush, reps, func(rec *vk.Recorder) error { return o.gemm(rec, "coopmat", t, w, xb, n, yb, false) })
							}
							b.ReportMetric(us(med), "us")
							b.ReportMetric(0, "ns/op")
						})
						label := map[int]string{0: "full", 1: "no global loads", 2: "no MMA", 3: "neither", 4: "pure MMA", 8: "matrix loads+MMA only"}[probe]
						line += fmt.Sprintf(" | %s %7.1f us %5.1f TF", label, us(med), 2*float64(n)*float64(in)*float64(out)/med.Seconds()/1e12)
					}
					probes = append(probes, line)
				}
			}
			// Pure MMA throughput of 16x16x16 and 16x8x16 matrices (the
			// native mma.sync shape on NVIDIA) at the largest shape.
			if coopmat && typ == gguf.F16 && !testing.Short() && in == 4096 && out == 14336 {
				n := 512
				line := fmt.Sprintf("pure MMA %5dx%-5d n=%-3d", in, out, n)
				for _, cmn := range []int{16, 8} {
					t := gemmTiles{TM: 64, TN: 128, TK: 64, SM: 32, SN: 32, CMN: cmn, Probe: 4}
					var med time.Duration
					var err error
					b.Run(fmt.Sprintf("%s/%dx%d/n=%d/probe-%s", typ, in, out, n, t), func(b *testing.B) {
						for range b.N {
							if _, err = o.gemmPipeline("coopmat", t, w.wtype, false); err == nil {
								med = timeDispatch(b, d, flush, reps, func(rec *vk.Recorder) error { return o.gemm(rec, "coopmat", t, w, xb, n, yb, false) })
							}
						}
						b.ReportMetric(us(med), "us")
						b.ReportMetric(0, "ns/op")
					})
					if err != nil {
						line += fmt.Sprintf(" | %s: %v", t, err)
						continue
					}
					line += fmt.Sprintf(" | %s %7.1f us %5.1f TF", t, us(med), 2*float64(n)*float64(in)*float64(out)/med.Seconds()/1e12)
					stats = append(stats, gemmStatsLine(o, "coopmat", t, w.wtype))
				}
				probes = append(probes, line)
			}
			w.close()
		}
	}
	// The driver's compiler statistics of every timed tile (registers,
	// spills, shared memory): spills or low occupancy explain slow tiles.
	if d.KernelStats() {
		for _, variant := range gemmVariants(b, d) {
			for _, t := range gemmBenchTiles[variant] {
				for _, wt := range []uint32{kernels.WeightF16, kernels.WeightQ8_0} {
					stats = append(stats, gemmStatsLine(o, variant, t, wt))
				}
			}
		}
		if coopmat {
			for _, probe := range []int{1, 2, 4, 8} {
				t := defaultGemmTiles("coopmat", 512, kernels.WeightF16)
				t.Probe = probe
				stats = append(stats, gemmStatsLine(o, "coopmat", t, kernels.WeightF16))
			}
		}
	} else {
		stats = append(stats, "(the device reports no compiler statistics: no VK_KHR_pipeline_executable_properties)")
	}
	var picks []string
	for _, typ := range types {
		for _, n := range ns {
			tiles := sums[key{typ, n}]
			names := make([]string, 0, len(tiles))
			for name := range tiles {
				names = append(names, name)
			}
			slices.SortFunc(names, func(a, b string) int { return cmp.Compare(tiles[a], tiles[b]) })
			line := fmt.Sprintf("%-5s n=%-3d default %-22s", typ, n, defaultGemmTiles(gemmVariantName(coopmat), n, benchWType(typ)))
			for i := range min(3, len(names)) {
				line += fmt.Sprintf(" | %s %.0f us", names[i], tiles[names[i]])
			}
			picks = append(picks, line)
		}
	}
	// Printed, not logged: a parent benchmark's log is not shown.
	fmt.Printf("gemm on %s: the fastest tile per shape and n, and linear (the model's choice: defaultGemmTiles or matmul):\n%s\n"+
		"fastest tiles summed over the shapes, per weight type and n (to choose defaultGemmTiles):\n%s\n"+
		"probes of the default coopmat tile (garbage results; which side bounds the time; pure MMA: only the multiply-adds, fragments loaded once):\n%s\n"+
		"driver compiler statistics per tile:\n%s\n",
		d.Info.Name, strings.Join(summary, "\n"), strings.Join(picks, "\n"), strings.Join(probes, "\n"), strings.Join(stats, "\n"))
}

// gemmStatsLine is one line of the driver's compiler statistics of gemm's
// pipeline for variant, tile t and weight type wt.
func gemmStatsLine(o *ops, variant string, t gemmTiles, wt uint32) string {
	line := fmt.Sprintf("%-7s %-26s wtype %2d:", variant, t, wt)
	p, err := o.gemmPipeline(variant, t, wt, false)
	if err != nil {
		return line + " " + err.Error()
	}
	st, err := p.Stats()
	if err != nil {
		return line + " " + err.Error()
	}
	for _, s := range st {
		line += fmt.Sprintf(" %s=%g", strings.ReplaceAll(s.Name, " ", "_"), s.Value)
	}
	return line
}

// gemmBenchTiles are the tiles BenchmarkGemm times per variant: linear's
// defaults and the candidates for them.
var gemmBenchTiles = map[string][]gemmTiles{
	"coopmat": {
		{TM: 32, TN: 128, TK: 32, SM: 32, SN: 32},
		{TM: 64, TN: 128, TK: 64, SM: 32, SN: 64},
		{TM: 64, TN: 128, TK: 32, SM: 32, SN: 64},
		{TM: 64, TN: 256, TK: 32, SM: 32, SN: 64},
		{TM: 64, TN: 256, TK: 32, SM: 32, SN: 64, Prefetch: 2},
		{TM: 128, TN: 128, TK: 32, SM: 32, SN: 64},
		{TM: 128, TN: 128, TK: 32, SM: 64, SN: 64},
		{TM: 128, TN: 128, TK: 64, SM: 32, SN: 64},
		{TM: 128, TN: 256, TK: 32, SM: 64, SN: 64},
		{TM: 64, TN: 64, TK: 32, SM: 32, SN: 32},
		{TM: 64, TN: 64, TK: 64, SM: 32, SN: 32},
		{TM: 32, TN: 64, TK: 64, SM: 32, SN: 32},
	},
	"scalar": {
		{TM: 32, TN: 64, TK: 32, SM: 4, SN: 4},
	},
}

// gemmVariantName is the variant linear runs: coopmat where the device has it.
func gemmVariantName(coopmat bool) string {
	if coopmat {
		return "coopmat"
	}
	return "scalar"
}

// benchWType is the shader weight type of a benchmark weight of typ.
func benchWType(typ gguf.TensorType) uint32 {
	if typ == gguf.F16 {
		return kernels.WeightF16
	}
	return kernels.WeightQ8_0 // any dequantizing type: defaults only tell F16 apart
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// benchWeight is an out x in weight of typ on d: a random 64-row pattern
// repeated (values do not change timings; generating 58M random values
// would).
func benchWeight(b *testing.B, d *vk.Device, typ gguf.TensorType, in, out int) *weight {
	b.Helper()
	rr := gputest.Rand(b)
	pat := randTensor(rr, typ, in, 64)
	t := gguf.Tensor{Name: fmt.Sprintf("bench.%s.%dx%d", typ, in, out), Type: typ, Dims: []uint64{uint64(in), uint64(out)}}
	t.Data = make([]byte, 0, len(pat.Data)*(out/64+1))
	for len(t.Data) < len(pat.Data)*out/64 {
		t.Data = append(t.Data, pat.Data...)
	}
	w, err := uploadWeight(d, t)
	require.NoError(b, err)
	return w
}

// timeDispatch records reps runs of record, each after an L2 flush and
// between two timestamps, and returns the median GPU time.
func timeDispatch(b *testing.B, d *vk.Device, flush *vk.Buffer, reps int, record func(rec *vk.Recorder) error) time.Duration {
	b.Helper()
	// A warm-up run: first dispatches of a pipeline may include lazy
	// compilation on some drivers.
	warm, err := d.NewRecorder()
	require.NoError(b, err)
	require.NoError(b, record(warm))
	require.NoError(b, warm.Submit())
	warm.Close()
	rec, err := d.NewRecorder()
	require.NoError(b, err)
	defer rec.Close()
	for range reps {
		require.NoError(b, rec.Fill(flush, 0))
		require.NoError(b, rec.Timestamp("start"))
		require.NoError(b, record(rec))
		require.NoError(b, rec.Timestamp("end"))
	}
	require.NoError(b, rec.Submit())
	tm, err := rec.Timings()
	require.NoError(b, err)
	var ds []time.Duration
	for _, x := range tm {
		if x.From == "start" {
			ds = append(ds, x.Elapsed)
		}
	}
	require.Len(b, ds, reps)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// BenchmarkGemmInputs compares gemm reading float32 activations (converted
// to f16 in every workgroup's tiles, the path before f16 inputs) with
// reading to_f16's f16 copy (A16), F16 weights at Llama-3-8B shapes, from
// decoding-size batches (50 rows: few-shot) to prefill chunks (2048), in
// the default tile and four others, with f16 inputs also loading two
// steps ahead (Prefetch 2, coopmat); plus the conversion itself, which a
// step runs once per gemm input. GPU timestamps, L2 flushed, median of
// 10. -short: small shapes (a smoke run on lavapipe).
//
//	go test -run '^$' -bench 'BenchmarkGemmInputs$' -benchtime 1x ./model/
func BenchmarkGemmInputs(b *testing.B) {
	d := gputest.Device(b)
	if !d.Info.Timestamps {
		b.Fatalf("%s has no compute timestamps", d.Info.Name)
	}
	r := gputest.Rand(b)
	variant := gemmVariantName(slices.Contains(gemmVariants(b, d), "coopmat"))
	shapes := [][2]int{{4096, 4096}, {4096, 14336}, {14336, 4096}} // in, out
	ns := []int{50, 256, 512, 1024, 2048}
	tiles := []gemmTiles{defaultGemmTiles(variant, 2048, kernels.WeightF16)}
	if variant == "coopmat" {
		// Larger tiles (each weight tile serves more rows) and tiles with
		// two shared stages within 48 KiB (the 64 x 256 default has one).
		tiles = append(tiles, gemmTiles{TM: 128, TN: 256, TK: 32, SM: 64, SN: 64}, gemmTiles{TM: 128, TN: 128, TK: 32, SM: 64, SN: 64},
			gemmTiles{TM: 128, TN: 128, TK: 32, SM: 32, SN: 64}, gemmTiles{TM: 64, TN: 128, TK: 32, SM: 32, SN: 64})
	}
	reps, flushBytes := 10, uint64(256<<20)
	if testing.Short() {
		shapes, ns, reps, flushBytes = [][2]int{{256, 320}}, []int{50, 64}, 2, 16<<20
	}
	flush, err := d.NewBuffer(flushBytes)
	require.NoError(b, err)
	defer flush.Close()
	maxN, maxIn := slices.Max(ns), 0
	for _, s := range shapes {
		maxIn = max(maxIn, s[0], s[1])
	}
	xb, err := d.NewBuffer(uint64(4 * maxN * maxIn))
	require.NoError(b, err)
	defer xb.Close()
	require.NoError(b, xb.WriteF32(0, randFloats(r, maxN*maxIn, 1)))
	hb, err := d.NewBuffer(uint64(2 * maxN * maxIn))
	require.NoError(b, err)
	defer hb.Close()
	yb, err := d.NewBuffer(uint64(4 * maxN * maxIn))
	require.NoError(b, err)
	defer yb.Close()
	o := newOps(d)
	defer o.close()

	var lines []string
	timed := func(name string, record func(rec *vk.Recorder) error) time.Duration {
		var med time.Duration
		b.Run(name, func(b *testing.B) {
			for range b.N {
				med = timeDispatch(b, d, flush, reps, record)
			}
			b.ReportMetric(us(med), "us")
			b.ReportMetric(0, "ns/op")
		})
		return med
	}
	for _, sh := range shapes {
		in, out := sh[0], sh[1]
		w := benchWeightGPU(b, d, o, gguf.F16, in, out)
		for _, n := range ns {
			flops := 2 * float64(n) * float64(in) * float64(out)
			conv := timed(fmt.Sprintf("%dx%d/n=%d/to_f16", in, out, n), func(rec *vk.Recorder) error { return o.toF16(rec, xb, hb, n*in) })
			for _, t := range tiles {
				f32 := timed(fmt.Sprintf("%dx%d/n=%d/%s-%s", in, out, n, variant, t), func(rec *vk.Recorder) error {
					return o.gemm(rec, variant, t, w, xb, n, yb, false)
				})
				t16 := t
				t16.A16 = true
				f16 := timed(fmt.Sprintf("%dx%d/n=%d/%s-%s", in, out, n, variant, t16), func(rec *vk.Recorder) error {
					return o.gemm(rec, variant, t16, w, hb, n, yb, false)
				})
				mark := ""
				if t == defaultGemmTiles(variant, n, kernels.WeightF16) {
					mark = " (default)"
				}
				line := fmt.Sprintf("%5dx%-5d n=%-4d %-24s f32 inputs %8.1f us %6.1f TF | f16 inputs %8.1f us %6.1f TF (%4.2fx)",
					in, out, n, t, us(f32), flops/f32.Seconds()/1e12, us(f16), flops/f16.Seconds()/1e12, f32.Seconds()/f16.Seconds())
				if variant == "coopmat" {
					// Loads two steps ahead.
					p2 := t16
					p2.Prefetch = 2
					pt := timed(fmt.Sprintf("%dx%d/n=%d/%s-%s", in, out, n, variant, p2), func(rec *vk.Recorder) error {
						return o.gemm(rec, variant, p2, w, hb, n, yb, false)
					})
					line += fmt.Sprintf(" | f16, prefetch 2 %8.1f us %6.1f TF (%4.2fx)", us(pt), flops/pt.Seconds()/1e12, f32.Seconds()/pt.Seconds())
				}
				lines = append(lines, line+fmt.Sprintf(" | to_f16 %6.1f us%s", us(conv), mark))
			}
		}
		// Few-shot rows: split-K counts against the automatic choice
		// (enough workgroups that every weight byte, read once, streams
		// at full bandwidth), f16 inputs, default tile.
		if n := ns[0]; n <= 64 {
			t := defaultGemmTiles(variant, n, kernels.WeightF16)
			t.A16 = true
			line := fmt.Sprintf("%5dx%-5d n=%-4d %-24s split-K", in, out, n, t)
			for _, split := range []int{0, 1, 2, 4, 8, 16} {
				ts := t
				ts.Split = split
				med := timed(fmt.Sprintf("%dx%d/n=%d/%s-%s", in, out, n, variant, ts), func(rec *vk.Recorder) error {
					return o.gemm(rec, variant, ts, w, hb, n, yb, false)
				})
				label := fmt.Sprint(split)
				if split == 0 {
					groups := ceilDiv(n, t.TM) * ceilDiv(out, t.TN)
					label = fmt.Sprintf("auto (%d)", o.gemmSplits(t, groups, ceilDiv(in, t.TK), n*out))
				}
				line += fmt.Sprintf(" | %s %.1f us %.0f wGB/s", label, us(med), float64(out*w.rowBytes)/med.Seconds()/1e9)
			}
			lines = append(lines, line)
		}
		w.close()
	}
	// Registers and spills of each path (more registers: fewer workgroups
	// per SM).
	if d.KernelStats() {
		for _, t := range tiles {
			for _, v := range []gemmTiles{t, {A16: true}, {A16: true, Prefetch: 2}} {
				tv := t
				tv.A16, tv.Prefetch = v.A16, v.Prefetch
				lines = append(lines, gemmStatsLine(o, variant, tv, kernels.WeightF16))
			}
		}
	}
	fmt.Printf("gemm on %s, F16 weights: float32 inputs (converted in every tile) against f16 inputs (to_f16 once per step):\n%s\n",
		d.Info.Name, strings.Join(lines, "\n"))
}

// benchWeightGPU is an out x in weight of typ (not a regrouped type)
// generated on the device by weight_fill, as LoadRandom makes them:
// nothing of it passes through the host.
func benchWeightGPU(b *testing.B, d *vk.Device, o *ops, typ gguf.TensorType, in, out int) *weight {
	b.Helper()
	name := fmt.Sprintf("blk.0.bench.%s.%dx%d", typ, in, out)
	dims := []uint64{uint64(in), uint64(out)}
	w, err := newWeight(d, name, typ, dims, 0)
	require.NoError(b, err)
	require.False(b, w.regrouped, "%s: regrouped weights are filled through the host", typ)
	rec, err := d.NewRecorder()
	require.NoError(b, err)
	defer rec.Close()
	var prog progress
	require.NoError(b, fillWeightDevice(o, rec, w, modelgen.TensorParams(gputest.Rand(b).Uint64(), name, typ, dims), &prog))
	return w
}

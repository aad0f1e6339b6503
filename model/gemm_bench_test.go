package model

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/vk"
	"github.com/stretchr/testify/require"
)

// BenchmarkGemm times gemm in every variant the device runs and every tile
// of gemmTileSets, and matmul, at Llama-3-8B shapes (4096->4096,
// 4096->14336, 14336->4096; F16, Q4_0, Q8_0 weights; 16..512 activation
// rows): GPU timestamps around each dispatch, the L2 flushed before each
// (a 256 MiB fill), median of 10. Each result line reports TFLOP/s (2 n in
// out / time) and the weights' GB/s (weight bytes / time), and a summary
// table follows. -short runs small shapes (a smoke run on lavapipe).
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
		sets := gemmTileSets[variant]
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

	var summary []string
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
				best, bestName, mm := 0.0, "", 0.0
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
							mm, mmT = tf, med
						case m.name == "linear":
							linT = med
						case tf > best:
							best, bestName, bestT = tf, m.name, med
						}
					})
				}
				summary = append(summary, fmt.Sprintf("%-5s %5dx%-5d n=%-3d  matmul %8.1f us %6.2f TFLOP/s | best gemm %8.1f us %6.2f TFLOP/s %5.0f wGB/s %-28s %5.1fx matmul | linear %8.1f us %6.2f TFLOP/s = %4.2fx the n=1 step (%.1f us)",
					typ, in, out, n, us(mmT), mm, us(bestT), best, wBytes/bestT.Seconds()/1e9, bestName, best/max(mm, 1e-9),
					us(linT), flops/linT.Seconds()/1e12, linT.Seconds()/one.Seconds(), us(one)))
			}
			w.close()
		}
	}
	// Printed, not logged: a parent benchmark's log is not shown.
	fmt.Printf("gemm on %s: matmul, the fastest gemm tile, and linear (the model's choice) against matmul's n=1 step:\n%s\n",
		d.Info.Name, strings.Join(summary, "\n"))
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

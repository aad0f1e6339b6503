package model

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/probe"
	"github.com/deft-vk/deft/vk"
)

// BenchmarkMatmul times one matmul per weight type at Llama-3-8B's shapes
// for n = 1, 4 and 8 activation rows (decode, branches, small drafts) with
// GPU timestamps (L2 flushed by a 256 MiB fill before each run, median of
// 15 runs) and reports the weight bytes read per second. At n = 1 it also
// tries other workgroup shapes (rows x invocations) for the three target
// types, and it ends with the matmul time of one single-sequence decode
// step of Llama-3-8B (32 layers of q, k, v, o, gate, up, down, then the
// output matrix) against the weight-read floor (weight bytes / the copy
// bandwidth of `deft probe`, else 4169 GB/s, the H200's).
//
//	go test -run '^$' -bench Matmul -benchtime 1x ./model/
//
// On a CPU device (lavapipe) the shapes are divided by 32.
func BenchmarkMatmul(b *testing.B) {
	d := gputest.Device(b)
	if !d.Info.Timestamps {
		b.Fatalf("device %s has no compute timestamps", d.Info.Name)
	}
	div := 1
	if d.Info.Type == vk.TypeCPU {
		div = 32
	}
	shapes := []struct {
		name      string
		in, out   int
		perLayer  int // uses per layer of Llama-3-8B (0: the output matrix)
		skipOnCPU bool
	}{
		{"q/o 4096x4096", 4096, 4096, 2, false},
		{"k/v 4096x1024", 4096, 1024, 2, false},
		{"gate/up 4096x14336", 4096, 14336, 2, false},
		{"down 14336x4096", 14336, 4096, 1, false},
		{"output 4096x128256", 4096, 128256, 0, false},
	}
	types := []gguf.TensorType{gguf.F16, gguf.Q8_0, gguf.Q4_K, gguf.Q6_K, gguf.BF16, gguf.Q4_0, gguf.F32}
	if s := os.Getenv("DEFT_MATMUL_TYPES"); s != "" {
		types = nil
		for _, name := range strings.Split(s, ",") {
			for _, t := range gguf.SupportedTypes {
				if t.String() == name {
					types = append(types, t)
				}
			}
		}
	}
	sweep := []matmulShape{{2, 128}, {4, 64}, {4, 256}, {8, 128}, {8, 64}, {2, 256}}
	floor := 4169e9
	floorSrc := "4169 GB/s (H200 copy bandwidth; run `deft probe` to measure this device)"
	if p, err := probe.Load(d.Info.UUID); err == nil {
		floor, floorSrc = p.BytesPerSec, fmt.Sprintf("%.0f GB/s (deft probe of this device)", p.BytesPerSec/1e9)
	}
	flush, err := d.NewBuffer(min(256<<20, uint64(d.Info.MaxStorageBufferRange)))
	if err != nil {
		b.Fatal(err)
	}
	defer flush.Close()
	r := rand.New(rand.NewPCG(1, 2))
	type key struct {
		typ gguf.TensorType
		in  int
		n   int
	}
	best := map[key]time.Duration{}
	var summary []string
	for _, typ := range types {
		for _, sh := range shapes {
			in, out := sh.in/div, sh.out/div
			if typ.BlockSize() == 256 {
				in = max(256, in/256*256)
			}
			wt := benchTensor(r, typ, in, out)
			w, err := uploadWeight(d, wt)
			if err != nil {
				b.Fatal(err)
			}
			x, err := d.NewBuffer(uint64(4 * 8 * in))
			if err == nil {
				err = x.WriteF32(0, randFloats(r, 8*in, 1))
			}
			if err != nil {
				b.Fatal(err)
			}
			y, err := d.NewBuffer(uint64(4 * 8 * out))
			if err != nil {
				b.Fatal(err)
			}
			bytes := float64(w.rows * w.rowBytes)
			for _, n := range []int{1, 4, 8} {
				try := []matmulShape{defaultMatmulShape}
				if n == 1 && (typ == gguf.F16 || typ == gguf.Q8_0 || typ == gguf.Q4_K) && div == 1 {
					try = append(try, sweep...)
				}
				for _, ms := range try {
					name := fmt.Sprintf("%s/%s/n=%d/%dx%d", typ, sh.name, n, ms.rows, ms.group)
					b.Run(name, func(b *testing.B) {
						o := newOps(d)
						o.mm = ms
						var med time.Duration
						for range b.N {
							if med, err = timeMatmul(d, o, w, x, y, n, flush); err != nil {
								b.Fatal(err)
							}
						}
						b.ReportMetric(float64(med.Nanoseconds())/1e3, "us")
						b.ReportMetric(bytes/med.Seconds()/1e9, "GB/s")
						b.ReportMetric(0, "ns/op")
						k := key{typ, sh.in, n}
						if cur, ok := best[k]; !ok || med < cur {
							best[k] = med
						}
						if ms == defaultMatmulShape {
							summary = append(summary, fmt.Sprintf("%-5s %-20s n=%d  %8.1f us  %7.1f GB/s  (%.2fx the floor)",
								typ, sh.name, n, float64(med.Nanoseconds())/1e3, bytes/med.Seconds()/1e9, med.Seconds()*floor/bytes))
						}
					})
				}
			}
			x.Close()
			y.Close()
			w.close()
		}
	}
	fmt.Printf("\nmatmul, default shape %dx%d (rows x invocations), weight bytes per GPU time; floor: %s\n",
		defaultMatmulShape.rows, defaultMatmulShape.group, floorSrc)
	for _, s := range summary {
		fmt.Println(s)
	}
	if div != 1 {
		return
	}
	fmt.Println("\none Llama-3-8B decode step's matmuls (32 layers + output; best workgroup shape where swept):")
	for _, typ := range types {
		for _, n := range []int{1, 4, 8} {
			var total time.Duration
			var bytes float64
			ok := true
			for _, sh := range shapes {
				t, found := best[key{typ, sh.in, n}]
				ok = ok && found
				rb, _ := typ.RowBytes(uint64(sh.in))
				times := 32 * sh.perLayer
				if sh.perLayer == 0 {
					times = 1
				}
				total += time.Duration(times) * t
				bytes += float64(times) * float64(rb) * float64(sh.out)
			}
			if ok {
				fmt.Printf("%-5s n=%d  %7.3f ms for %.2f GB: %.2fx the floor of %.3f ms\n", typ, n, total.Seconds()*1e3, bytes/1e9,
					total.Seconds()*floor/bytes, bytes/floor*1e3)
			}
		}
	}
}

// timeMatmul returns the median GPU time of 15 runs of one matmul, each
// after an L2 flush.
func timeMatmul(d *vk.Device, o *ops, w *weight, x, y *vk.Buffer, n int, flush *vk.Buffer) (time.Duration, error) {
	rec, err := d.NewRecorder()
	if err != nil {
		return 0, err
	}
	defer rec.Close()
	const runs = 15
	for i := range runs {
		rec.Barrier()
		if err := rec.Fill(flush, uint32(i)); err != nil {
			return 0, err
		}
		rec.Barrier()
		if err := rec.Timestamp("start"); err != nil {
			return 0, err
		}
		if err := o.matmul(rec, w, x, n, y, false); err != nil {
			return 0, err
		}
		if err := rec.Timestamp("end"); err != nil {
			return 0, err
		}
	}
	if err := rec.Submit(); err != nil { // warm-up (pipelines, clocks)
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
	if len(times) == 0 {
		return 0, fmt.Errorf("no timestamps")
	}
	slices.Sort(times)
	return times[len(times)/2], nil
}

// benchTensor makes a rows x cols tensor of typ quickly: random bytes,
// with every f16 of float rows and block scales set to a finite value.
func benchTensor(r *rand.Rand, typ gguf.TensorType, cols, rows int) gguf.Tensor {
	rb, _ := typ.RowBytes(uint64(cols))
	data := make([]byte, int(rb)*rows)
	for i := 0; i+8 <= len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], r.Uint64())
	}
	small := half.FromFloat32(0.01)
	switch typ {
	case gguf.F32:
		for i := 0; i+4 <= len(data); i += 4 {
			binary.LittleEndian.PutUint32(data[i:], 0x3c000000|binary.LittleEndian.Uint32(data[i:])&0x807fffff)
		}
	case gguf.F16, gguf.BF16:
		for i := 0; i+2 <= len(data); i += 2 {
			v := binary.LittleEndian.Uint16(data[i:])
			if typ == gguf.F16 {
				v = 0x2000 | v&0x83ff
			} else {
				v = 0x3c00 | v&0x807f
			}
			binary.LittleEndian.PutUint16(data[i:], v)
		}
	default:
		bb := typ.BlockBytes()
		for o := 0; o+bb <= len(data); o += bb {
			switch typ {
			case gguf.Q8_0, gguf.Q4_0:
				binary.LittleEndian.PutUint16(data[o:], small)
			case gguf.Q4_K:
				binary.LittleEndian.PutUint16(data[o:], small)
				binary.LittleEndian.PutUint16(data[o+2:], small)
			case gguf.Q6_K:
				binary.LittleEndian.PutUint16(data[o+208:], small)
			}
		}
	}
	return gguf.Tensor{Name: "bench." + typ.String(), Type: typ, Dims: []uint64{uint64(cols), uint64(rows)}, Data: data}
}

// BenchmarkDecodeMatmuls times the matmuls of one single-sequence decode
// step of Llama-3-8B as Forward records them (per layer: Q/K/V stacked with
// the attention norm fused, o with the residual add, gate/up paired with
// the FFN norm and SwiGLU fused, down with the residual add; then the
// output matrix with the output norm), 32 layers alternating between two
// sets of weights so that no layer's weights are still in L2, in one
// command buffer: the dispatches and barriers between them are counted.
// Types: F16, Q8_0, and a Q4_K_M-like mix (Q4_K; Q6_K for attn_v and
// ffn_down of every second layer and for the output). It prints the GPU
// time of the step and its ratio to the weight-read floor.
//
//	go test -run '^$' -bench DecodeMatmuls -benchtime 1x ./model/
func BenchmarkDecodeMatmuls(b *testing.B) {
	d := gputest.Device(b)
	if !d.Info.Timestamps {
		b.Fatalf("device %s has no compute timestamps", d.Info.Name)
	}
	embd, kv, ffn, vocab, layers := 4096, 1024, 14336, 128256, 32
	if d.Info.Type == vk.TypeCPU {
		embd, kv, ffn, vocab, layers = 256, 64, 512, 1024, 4
	}
	floor := 4169e9
	if p, err := probe.Load(d.Info.UUID); err == nil {
		floor = p.BytesPerSec
	}
	r := rand.New(rand.NewPCG(3, 4))
	mixes := []struct {
		name string
		of   func(name string, layer int) gguf.TensorType
	}{
		{"F16", func(string, int) gguf.TensorType { return gguf.F16 }},
		{"Q8_0", func(string, int) gguf.TensorType { return gguf.Q8_0 }},
		{"Q4_K_M", func(name string, layer int) gguf.TensorType {
			if name == "output" || (layer%2 == 1 && (name == "v" || name == "down")) {
				return gguf.Q6_K
			}
			return gguf.Q4_K
		}},
	}
	buf := func(floats int) *vk.Buffer {
		bb, err := d.NewBuffer(uint64(4 * floats))
		if err == nil {
			err = bb.WriteF32(0, randFloats(r, floats, 1))
		}
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(bb.Close)
		return bb
	}
	for _, mix := range mixes {
		for _, n := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/n=%d", mix.name, n), func(b *testing.B) {
				type lw struct{ qkv, o, gateUp, gate, up, down *weight }
				var ls [2]lw
				var all []*weight
				defer func() {
					for _, w := range all {
						w.close()
					}
				}()
				up := func(t gguf.Tensor) *weight {
					w, err := uploadWeightLayout(d, t, 0, true)
					if err != nil {
						b.Fatal(err)
					}
					all = append(all, w)
					return w
				}
				var bytes float64
				for i := range ls {
					ts := map[string]gguf.Tensor{}
					for _, s := range []struct {
						name       string
						cols, rows int
					}{{"q", embd, embd}, {"k", embd, kv}, {"v", embd, kv}, {"o", embd, embd}, {"gate", embd, ffn}, {"up", embd, ffn}, {"down", ffn, embd}} {
						ts[s.name] = benchTensor(r, mix.of(s.name, i), s.cols, s.rows)
					}
					l := &ls[i]
					if ts["v"].Type == ts["q"].Type {
						t, segs := stackTensors(ts["q"], ts["k"], ts["v"])
						l.qkv = up(t)
						l.qkv.segs = segs
					} else {
						t, segs := stackTensors(ts["q"], ts["k"])
						l.qkv = up(t)
						l.qkv.segs = segs
						l.gate = up(ts["v"]) // the separate V matmul
						l.gate.segs = []int{kv}
					}
					l.o = up(ts["o"])
					t, segs := stackTensors(ts["gate"], ts["up"])
					l.gateUp = up(t)
					l.gateUp.segs, l.gateUp.glu = segs, true
					l.down = up(ts["down"])
					for _, w := range []*weight{l.qkv, l.gate, l.o, l.gateUp, l.down} {
						if w != nil {
							bytes += float64(layers/2) * float64(w.rows*w.rowBytes)
						}
					}
				}
				out := up(benchTensor(r, mix.of("output", 0), embd, vocab))
				bytes += float64(out.rows * out.rowBytes)
				h, att, norm := buf(n*embd), buf(n*embd), buf(embd)
				q, k, v, g, logits := buf(n*embd), buf(n*kv), buf(n*kv), buf(n*ffn), buf(n*vocab)
				o := newOps(d)
				rec, err := d.NewRecorder()
				if err != nil {
					b.Fatal(err)
				}
				defer rec.Close()
				must := func(err error) {
					if err != nil {
						b.Fatal(err)
					}
				}
				const runs = 5
				for range runs {
					rec.Barrier()
					must(rec.Timestamp("start"))
					for li := range layers {
						l := ls[li%2]
						if l.gate != nil {
							must(o.matmulFused(rec, l.qkv, h, n, []*vk.Buffer{q, k}, false, norm, 1e-5))
							must(o.matmulFused(rec, l.gate, h, n, []*vk.Buffer{v}, false, norm, 1e-5))
						} else {
							must(o.matmulFused(rec, l.qkv, h, n, []*vk.Buffer{q, k, v}, false, norm, 1e-5))
						}
						must(o.matmul(rec, l.o, att, n, h, true))
						must(o.matmulFused(rec, l.gateUp, h, n, []*vk.Buffer{g}, false, norm, 1e-5))
						must(o.matmul(rec, l.down, g, n, h, true))
					}
					must(o.matmulFused(rec, out, h, n, []*vk.Buffer{logits}, false, norm, 1e-5))
					must(rec.Timestamp("end"))
				}
				must(rec.Submit()) // warm-up
				var med time.Duration
				for range b.N {
					must(rec.Submit())
					ts, err := rec.Timestamps()
					must(err)
					var times []time.Duration
					for i := 0; i+1 < len(ts); i += 2 {
						times = append(times, time.Duration(ts[i+1]-ts[i]))
					}
					slices.Sort(times)
					med = times[len(times)/2]
				}
				dispatches, barriers := rec.Stats()
				b.ReportMetric(med.Seconds()*1e3, "ms")
				b.ReportMetric(med.Seconds()*floor/bytes, "x_floor")
				b.ReportMetric(0, "ns/op")
				fmt.Printf("decode matmuls %-6s n=%d: %.3f ms for %.2f GB of weights, %.2fx the floor of %.3f ms (%.0f GB/s); %d dispatches, %d barriers per %d runs\n",
					mix.name, n, med.Seconds()*1e3, bytes/1e9, med.Seconds()*floor/bytes, bytes/floor*1e3, bytes/med.Seconds()/1e9,
					dispatches, barriers, runs)
			})
		}
	}
}

// stackTensors stacks the rows of tensors of one type and row length, as
// Load stacks Q/K/V and gate/up; segs are their row counts.
func stackTensors(ts ...gguf.Tensor) (gguf.Tensor, []int) {
	out := gguf.Tensor{Name: ts[0].Name, Type: ts[0].Type, Dims: []uint64{ts[0].Dims[0], 0}}
	var segs []int
	for _, t := range ts {
		out.Data = append(out.Data, t.Data...)
		out.Dims[1] += t.Dims[1]
		segs = append(segs, int(t.Dims[1]))
	}
	return out, segs
}

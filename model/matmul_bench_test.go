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

// matmulSweep is the workgroup shapes (rows x invocations) the benchmarks
// try besides defaultMatmulShape: fewer and more rows per workgroup (more
// rows share each activation load: the quantized types read 2-4x more
// activation bytes than weight bytes at 4 rows), fewer and more
// invocations, and 2 or 4 chunks per invocation and loop iteration.
var matmulSweep = []matmulShape{{2, 128, 1}, {4, 64, 1}, {8, 64, 1}, {8, 128, 1}, {16, 64, 1}, {16, 128, 1},
	{4, 128, 2}, {4, 128, 4}, {8, 64, 2}, {8, 128, 2}, {16, 64, 2}}

// String is rows x invocations, and /u for u chunks per loop iteration.
func (s matmulShape) String() string {
	if s.unroll > 1 {
		return fmt.Sprintf("%dx%d/u%d", s.rows, s.group, s.unroll)
	}
	return fmt.Sprintf("%dx%d", s.rows, s.group)
}

// benchOps caches the benchmarks' ops per workgroup shape, so that each
// pipeline is created once (the driver compiles hundreds of them).
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

// matmulReport is BenchmarkMatmul's summary, printed again at the end of
// BenchmarkDecodeMatmuls so that one run ends with both.
var matmulReport []string

// benchShape is one matmul of a Llama-3-8B decode step: a plain matrix, or
// a fused one as Forward dispatches it (norm prologue; Q/K/V stacked into
// three outputs; gate/up stacked with SwiGLU).
type benchShape struct {
	name     string
	in, out  int // out: rows of the whole (stacked) matrix
	perLayer int // uses per layer (0: the output matrix)
	norm     bool
	segs     []int // stacked segments (glu: gate and up)
	glu      bool
	fused    bool // part of the fused step, not the plain one
	plain    bool // part of the plain step
}

// BenchmarkMatmul times one matmul per weight type at Llama-3-8B's shapes
// for n = 1, 4 and 8 activation rows (decode, branches, small drafts) with
// GPU timestamps (L2 flushed by a 256 MiB fill and a 128 MiB copy before
// each run, median of 15 runs) and reports the weight bytes read per
// second. It times the plain matrices (q, k, v, o, gate, up, down, output)
// and the fused dispatches of a decoding step (Q/K/V stacked with the
// attention norm, gate/up stacked with the FFN norm and SwiGLU, the output
// with its norm), so that fused and plain paths compare at equal bytes.
// For F16, Q8_0, Q4_K and Q6_K it sweeps the workgroup shapes of
// matmulSweep at every n. It ends with a summary: per type and n, the best
// shape of every matrix, and the matmul time of one decode step of
// Llama-3-8B (sum of isolated matmuls, plain and fused, best shape per
// matrix and with one shape for all) against the weight-read floor
// (weight bytes / the copy bandwidth of `deft probe`, else 4169 GB/s, the
// H200's).
//
//	go test -run '^$' -bench 'Matmul$' -benchtime 1x ./model/
//
// On a CPU device (lavapipe) the shapes are divided by 32 and only the
// default workgroup shape runs. DEFT_MATMUL_TYPES=F16,Q4_K limits the
// types.
func BenchmarkMatmul(b *testing.B) {
	d := gputest.Device(b)
	if !d.Info.Timestamps {
		b.Fatalf("device %s has no compute timestamps", d.Info.Name)
	}
	div := 1
	if d.Info.Type == vk.TypeCPU {
		div = 32
	}
	const embd, kv, ffn, vocab = 4096, 1024, 14336, 128256
	shapes := []benchShape{
		{name: "q/o", in: embd, out: embd, perLayer: 2, plain: true, fused: true}, // o is plain in the fused step too
		{name: "k/v", in: embd, out: kv, perLayer: 2, plain: true},
		{name: "gate/up", in: embd, out: ffn, perLayer: 2, plain: true},
		{name: "down", in: ffn, out: embd, perLayer: 1, plain: true, fused: true},
		{name: "output", in: embd, out: vocab, plain: true},
		{name: "qkv+norm", in: embd, out: embd + 2*kv, perLayer: 1, norm: true, segs: []int{embd, kv, kv}, fused: true},
		{name: "gateup+norm+glu", in: embd, out: 2 * ffn, perLayer: 1, norm: true, segs: []int{ffn, ffn}, glu: true, fused: true},
		{name: "output+norm", in: embd, out: vocab, norm: true, fused: true},
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
	swept := func(typ gguf.TensorType) bool {
		return div == 1 && (typ == gguf.F16 || typ == gguf.Q8_0 || typ == gguf.Q4_K || typ == gguf.Q6_K)
	}
	ns := []int{1, 4, 8}
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
	r := rand.New(rand.NewPCG(1, 2))
	type key struct {
		typ   gguf.TensorType
		shape string
		n     int
	}
	type result struct {
		t     time.Duration
		ms    matmulShape
		bytes float64
	}
	best := map[key]result{}
	byShape := map[key]map[matmulShape]time.Duration{}
	for _, typ := range types {
		for _, sh := range shapes {
			in, out := sh.in/div, sh.out/div
			segs := slices.Clone(sh.segs)
			for i := range segs {
				segs[i] /= div
			}
			if typ.BlockSize() == 256 {
				in = max(256, in/256*256)
			}
			wt := benchTensor(r, typ, in, out)
			w, err := uploadWeight(d, wt)
			if err != nil {
				b.Fatal(err)
			}
			if len(segs) > 0 && len(w.parts) == 1 {
				w.segs, w.glu = segs, sh.glu
			}
			nmax := ns[len(ns)-1]
			x, err := d.NewBuffer(uint64(4 * nmax * in))
			if err == nil {
				err = x.WriteF32(0, randFloats(r, nmax*in, 1))
			}
			if err != nil {
				b.Fatal(err)
			}
			g, err := d.NewBuffer(uint64(4 * in))
			if err == nil {
				err = g.WriteF32(0, randFloats(r, in, 1))
			}
			if err != nil {
				b.Fatal(err)
			}
			var ys []*vk.Buffer
			outs := []int{out}
			if len(w.segs) > 0 && !w.glu {
				outs = w.segs
			}
			if w.glu {
				outs = []int{w.segs[0]}
			}
			for _, o := range outs {
				y, err := d.NewBuffer(uint64(4 * nmax * o))
				if err != nil {
					b.Fatal(err)
				}
				ys = append(ys, y)
			}
			var norm *vk.Buffer
			if sh.norm {
				norm = g
			}
			bytes := float64(w.rows * w.rowBytes)
			for _, n := range ns {
				try := []matmulShape{defaultMatmulShape}
				if swept(typ) {
					try = append(try, matmulSweep...)
				}
				k := key{typ, sh.name, n}
				byShape[k] = map[matmulShape]time.Duration{}
				for _, ms := range try {
					name := fmt.Sprintf("%s/%s/n=%d/%v", typ, sh.name, n, ms)
					b.Run(name, func(b *testing.B) {
						o := opsFor(d, ms)
						var med time.Duration
						for range b.N {
							if med, err = timeMatmul(d, func(rec *vk.Recorder) error {
								return o.matmulFused(rec, w, x, n, ys, false, norm, 1e-5)
							}, flush); err != nil {
								b.Fatal(err)
							}
						}
						b.ReportMetric(float64(med.Nanoseconds())/1e3, "us")
						b.ReportMetric(bytes/med.Seconds()/1e9, "GB/s")
						b.ReportMetric(0, "ns/op")
						byShape[k][ms] = med
						if cur, ok := best[k]; !ok || med < cur.t {
							best[k] = result{med, ms, bytes}
						}
					})
				}
			}
			x.Close()
			g.Close()
			for _, y := range ys {
				y.Close()
			}
			w.close()
		}
	}
	var rep []string
	add := func(format string, args ...any) { rep = append(rep, fmt.Sprintf(format, args...)) }
	add("matmul summary (isolated, L2 flushed; GB/s of weight bytes; best shape rows x invocations, default %dx%d; floor %s):",
		defaultMatmulShape.rows, defaultMatmulShape.group, floorSrc)
	for _, typ := range types {
		for _, n := range ns {
			line := fmt.Sprintf("%-5s n=%d", typ, n)
			for _, sh := range shapes {
				k := key{typ, sh.name, n}
				res, ok := best[k]
				if !ok {
					continue
				}
				def := byShape[k][defaultMatmulShape]
				line += fmt.Sprintf(" | %s %.0f(%v) def %.0f", sh.name, res.bytes/res.t.Seconds()/1e9, res.ms,
					res.bytes/def.Seconds()/1e9)
			}
			add("%s", line)
		}
	}
	if div == 1 {
		add("one Llama-3-8B decode step's matmuls from isolated runs (plain: q,k,v,o,gate,up,down,output; fused: qkv+norm,o,gateup+norm+glu,down,output+norm):")
		for _, typ := range types {
			for _, n := range ns {
				for _, fused := range []bool{false, true} {
					var total, def time.Duration
					var bytes float64
					uniform := map[matmulShape]time.Duration{} // one shape for every matrix
					ok := true
					for _, sh := range shapes {
						if (fused && !sh.fused) || (!fused && !sh.plain) {
							continue
						}
						k := key{typ, sh.name, n}
						res, found := best[k]
						ok = ok && found
						times := 32 * sh.perLayer
						if sh.perLayer == 0 {
							times = 1
						}
						total += time.Duration(times) * res.t
						def += time.Duration(times) * byShape[k][defaultMatmulShape]
						bytes += float64(times) * res.bytes
						for ms, t := range byShape[k] {
							uniform[ms] += time.Duration(times) * t
						}
					}
					if !ok {
						continue
					}
					var bestU matmulShape
					for ms, t := range uniform {
						if bestU.rows == 0 || t < uniform[bestU] {
							bestU = ms
						}
					}
					kind := "plain"
					if fused {
						kind = "fused"
					}
					add("%-5s n=%d %s: best per matrix %7.3f ms = %.2fx floor (%.0f GB/s); best single shape %v %7.3f ms = %.2fx; default %7.3f ms = %.2fx; floor %.3f ms",
						typ, n, kind, total.Seconds()*1e3, total.Seconds()*floor/bytes, bytes/total.Seconds()/1e9,
						bestU, uniform[bestU].Seconds()*1e3, uniform[bestU].Seconds()*floor/bytes,
						def.Seconds()*1e3, def.Seconds()*floor/bytes, bytes/floor*1e3)
				}
			}
		}
	}
	matmulReport = rep
	fmt.Println()
	for _, s := range rep {
		fmt.Println(s)
	}
}

// timeMatmul returns the median GPU time of 15 runs of record (one matmul),
// each after an L2 flush: a fill of flush and a copy of its first half to
// its second (reads as well as writes through L2).
func timeMatmul(d *vk.Device, record func(rec *vk.Recorder) error, flush *vk.Buffer) (time.Duration, error) {
	rec, err := d.NewRecorder()
	if err != nil {
		return 0, err
	}
	defer rec.Close()
	const runs = 15
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
		if err := record(rec); err != nil {
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
// ffn_down of every second layer and for the output), for n = 1, 4 and 8,
// with every workgroup shape of matmulSweep (one shape for all matrices;
// only the default on a CPU device). It prints the GPU time of each step
// and its ratio to the weight-read floor, and ends with BenchmarkMatmul's
// summary (when it ran first) and its own: the best shape per mix and n.
// Compare "decode step" with the fused isolated sum of BenchmarkMatmul: the
// difference is the cost of running the dispatches in sequence (barriers,
// ramp-up and tail of each dispatch).
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
	shapes := []matmulShape{defaultMatmulShape}
	if d.Info.Type != vk.TypeCPU {
		shapes = append(shapes, matmulSweep...)
	}
	var rep []string
	for _, mix := range mixes {
		type lw struct{ qkv, o, gateUp, gate, up, down *weight }
		var ls [2]lw
		var all []*weight
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
		for _, n := range []int{1, 4, 8} {
			b.Run(fmt.Sprintf("%s/n=%d", mix.name, n), func(b *testing.B) {
				h, att, norm := buf(n*embd), buf(n*embd), buf(embd)
				q, k, v, g, logits := buf(n*embd), buf(n*kv), buf(n*kv), buf(n*ffn), buf(n*vocab)
				must := func(err error) {
					if err != nil {
						b.Fatal(err)
					}
				}
				var bestT time.Duration
				var bestS matmulShape
				var defT time.Duration
				for _, ms := range shapes {
					o := opsFor(d, ms)
					rec, err := d.NewRecorder()
					must(err)
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
					rec.Close()
					fmt.Printf("decode matmuls %-6s n=%d shape %-9v: %.3f ms for %.2f GB of weights, %.2fx the floor of %.3f ms (%.0f GB/s); %d dispatches, %d barriers per %d runs\n",
						mix.name, n, ms, med.Seconds()*1e3, bytes/1e9, med.Seconds()*floor/bytes, bytes/floor*1e3,
						bytes/med.Seconds()/1e9, dispatches, barriers, runs)
					if ms == defaultMatmulShape {
						defT = med
					}
					if bestT == 0 || med < bestT {
						bestT, bestS = med, ms
					}
				}
				b.ReportMetric(bestT.Seconds()*1e3, "ms")
				b.ReportMetric(bestT.Seconds()*floor/bytes, "x_floor")
				b.ReportMetric(0, "ns/op")
				rep = append(rep, fmt.Sprintf("decode step %-6s n=%d: best shape %-9v %.3f ms = %.2fx the floor of %.3f ms (%.0f GB/s); default %v %.3f ms = %.2fx",
					mix.name, n, bestS, bestT.Seconds()*1e3, bestT.Seconds()*floor/bytes, bytes/floor*1e3,
					bytes/bestT.Seconds()/1e9, defaultMatmulShape, defT.Seconds()*1e3, defT.Seconds()*floor/bytes))
			})
		}
		for _, w := range all {
			w.close()
		}
	}
	fmt.Println()
	for _, s := range matmulReport {
		fmt.Println(s)
	}
	fmt.Println("decode matmuls in sequence (BenchmarkDecodeMatmuls; one command buffer, two weight sets, one shape for all matrices):")
	for _, s := range rep {
		fmt.Println(s)
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

package genbench

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/llama/reference"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// SliceVocab is the vocabulary of the check's slice model.
const SliceVocab = 256

// checkTokens is how many tokens the check evaluates: a prompt of
// checkPrompt tokens in one batch, then one token at a time.
const (
	checkTokens = 6
	checkPrompt = 3
)

// Tolerance is the largest relative L2 error of the slice's logits against
// the float64 reference: the kernels decode the same weights exactly, so
// only fp32 arithmetic differs, plus the rounding of K/V to fp16.
func Tolerance(kv treeattn.KVType) float64 {
	if kv == treeattn.KVF16 {
		return 5e-3
	}
	return 1e-4
}

// CheckResult is the logits check of one method.
type CheckResult struct {
	Method string  `json:"method"`
	MaxErr float64 `json:"max_rel_l2"` // over the checked positions
	Tol    float64 `json:"tolerance"`
	OK     bool    `json:"ok"`
}

// sliceOf returns cfg cut to one block and a vocabulary of at most
// SliceVocab tokens.
func sliceOf(cfg llama.Config) llama.Config {
	c := cfg
	c.Blocks = 1
	c.Vocab = min(cfg.Vocab, SliceVocab)
	c.BOS, c.EOS = -1, -1
	return c
}

// tensorShape is one tensor of a slice: name, dims (GGUF order: row
// length first) and whether it is a norm (a vector, kept F32).
type tensorShape struct {
	name string
	dims []uint64
}

func sliceTensors(c llama.Config) []tensorShape {
	e, v := uint64(c.Embd), uint64(c.Vocab)
	q, kv, vd := uint64(c.Heads*c.HeadDim), uint64(c.KVHeads*c.HeadDim), uint64(c.KVHeads*c.HeadDimV)
	ts := []tensorShape{{llama.TokenEmbd, []uint64{e, v}}, {llama.OutputNorm, []uint64{e}}}
	if !c.TiedOutput {
		ts = append(ts, tensorShape{llama.Output, []uint64{e, v}})
	}
	if c.RopeFreqs != nil {
		ts = append(ts, tensorShape{llama.RopeFreqs, []uint64{uint64(c.RopeDims / 2)}})
	}
	for b := range c.Blocks {
		for _, t := range []tensorShape{
			{"attn_norm", []uint64{e}}, {"ffn_norm", []uint64{e}},
			{"attn_q", []uint64{e, q}}, {"attn_k", []uint64{e, kv}}, {"attn_v", []uint64{e, vd}},
			{"attn_output", []uint64{uint64(c.Heads * c.HeadDimV), e}},
			{"ffn_gate", []uint64{e, uint64(c.FFN)}}, {"ffn_up", []uint64{e, uint64(c.FFN)}},
			{"ffn_down", []uint64{uint64(c.FFN), e}},
		} {
			ts = append(ts, tensorShape{llama.BlockTensor(b, t.name), t.dims})
		}
	}
	return ts
}

// BuildSlice writes, in memory, a one-block model of cfg's shape with a
// vocabulary of at most SliceVocab: from src's own weights (block 0 and
// the first rows of the embedding and output) when src is not nil,
// otherwise random weights in the types typeOf gives (norms F32).
func BuildSlice(cfg llama.Config, typeOf func(string) gguf.TensorType, src *gguf.File, seed uint64) (*gguf.File, error) {
	c := sliceOf(cfg)
	w := gguf.NewWriter()
	kvs := []struct {
		k string
		v any
	}{
		{"general.architecture", "llama"}, {"general.name", "deft bench slice"},
		{"llama.block_count", uint32(c.Blocks)}, {"llama.embedding_length", uint32(c.Embd)},
		{"llama.feed_forward_length", uint32(c.FFN)}, {"llama.attention.head_count", uint32(c.Heads)},
		{"llama.attention.head_count_kv", uint32(c.KVHeads)}, {"llama.attention.key_length", uint32(c.HeadDim)},
		{"llama.attention.value_length", uint32(c.HeadDimV)}, {"llama.rope.dimension_count", uint32(c.RopeDims)},
		{"llama.attention.layer_norm_rms_epsilon", float32(c.RMSEps)}, {"llama.rope.freq_base", float32(c.RopeBase)},
		{"llama.context_length", uint32(max(c.ContextLen, 1))},
	}
	for _, kv := range kvs {
		if err := w.SetKV(kv.k, kv.v); err != nil {
			return nil, fmt.Errorf("slice: %w", err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	for _, t := range sliceTensors(c) {
		typ, data, err := sliceTensor(c, t, typeOf, src, rng)
		if err != nil {
			return nil, fmt.Errorf("slice: %s: %w", t.name, err)
		}
		if err := w.AddTensor(t.name, typ, t.dims, data); err != nil {
			return nil, fmt.Errorf("slice: %w", err)
		}
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("slice: %w", err)
	}
	f, err := gguf.FromBytes("slice", buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("slice: %w", err)
	}
	return f, nil
}

// sliceTensor returns one tensor's type and data.
func sliceTensor(c llama.Config, t tensorShape, typeOf func(string) gguf.TensorType, src *gguf.File, rng *rand.Rand) (gguf.TensorType, []byte, error) {
	rows := uint64(1)
	if len(t.dims) == 2 {
		rows = t.dims[1]
	}
	if src != nil {
		st, err := src.Tensor(t.name)
		if err != nil {
			return 0, nil, err
		}
		rb, err := st.Type.RowBytes(t.dims[0])
		if err != nil {
			return 0, nil, err
		}
		if uint64(len(st.Data)) < rb*rows {
			return 0, nil, fmt.Errorf("%d bytes, want at least %d", len(st.Data), rb*rows)
		}
		return st.Type, st.Data[:rb*rows], nil // the first rows: the embedding of the first tokens
	}
	n := int(t.dims[0] * rows)
	x := make([]float32, n)
	if len(t.dims) == 1 {
		for i := range x {
			x[i] = 1 + 0.2*(rng.Float32()-0.5) // norms near 1; rope_freqs positive
		}
		return gguf.F32, f32Bytes(x), nil
	}
	typ := gguf.F16
	if typeOf != nil {
		typ = typeOf(t.name)
	}
	// Rows of unit-ish output: entries of 1/sqrt(row length), so that
	// activations neither vanish nor blow up through the block.
	a := float32(math.Sqrt(3 / float64(t.dims[0])))
	if t.name == llama.TokenEmbd {
		a = 1
	}
	for i := range x {
		x[i] = a * (2*rng.Float32() - 1)
	}
	data, err := quantizeRows(typ, x, int(t.dims[0]))
	return typ, data, err
}

func f32Bytes(x []float32) []byte {
	b := make([]byte, 4*len(x))
	for i, v := range x {
		u := math.Float32bits(v)
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	return b
}

// quantizeRows encodes x (rows of cols) in typ, rows split over the CPUs:
// quantizing the Llama-3-8B block takes seconds per core.
func quantizeRows(typ gguf.TensorType, x []float32, cols int) ([]byte, error) {
	rows := len(x) / cols
	workers := min(runtime.NumCPU(), max(rows/64, 1))
	per := (rows + workers - 1) / workers
	parts := make([][]byte, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		r0, r1 := w*per, min(rows, (w+1)*per)
		if r0 >= r1 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			parts[w], errs[w] = gguf.Quantize(typ, x[r0*cols:r1*cols])
		}()
	}
	wg.Wait()
	var out []byte
	for w := range workers {
		if errs[w] != nil {
			return nil, errs[w]
		}
		out = append(out, parts[w]...)
	}
	return out, nil
}

// corruptForTest, when set by a test, changes the slice's weights seen by
// the GPU (not by the reference): the check must then fail.
var corruptForTest func(f *gguf.File) (*gguf.File, error)

// CheckSlice compares the GPU forward pass of the slice model f, under
// every method, with the float64 reference: a prompt of a few tokens in
// one batch, then single tokens, every position's logits. It returns a
// result per method and an error naming the first method over the
// tolerance.
func CheckSlice(d *vk.Device, f *gguf.File, methods []treeattn.Method, kv treeattn.KVType, seed uint64) ([]CheckResult, error) {
	cfg, err := llama.ConfigFrom(f)
	if err != nil {
		return nil, fmt.Errorf("check: slice: %w", err)
	}
	ref, err := reference.New(cfg, f)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	tokens := make([]int32, checkTokens)
	for i := range tokens {
		tokens[i] = int32(rng.IntN(cfg.Vocab))
	}
	seq := ref.NewSequence()
	want := make([][]float64, len(tokens))
	for i, t := range tokens {
		if want[i], err = seq.Eval(t); err != nil {
			return nil, fmt.Errorf("check: reference: %w", err)
		}
	}
	gf := f
	if corruptForTest != nil {
		if gf, err = corruptForTest(f); err != nil {
			return nil, err
		}
	}
	tol := Tolerance(kv)
	var out []CheckResult
	var bad []string
	for _, meth := range methods {
		e, err := checkMethod(d, gf, meth, kv, tokens, want)
		if err != nil {
			return out, fmt.Errorf("check %s: %w", meth, err)
		}
		r := CheckResult{Method: string(meth), MaxErr: e, Tol: tol, OK: e <= tol}
		out = append(out, r)
		if !r.OK {
			bad = append(bad, fmt.Sprintf("%s: relative L2 error %.3g > %.3g", meth, e, tol))
		}
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("logits check failed on the 1-block slice against the float64 CPU reference (%s); not timing a model that computes wrong logits",
			strings.Join(bad, "; "))
	}
	return out, nil
}

// checkMethod runs the slice on the GPU with one method and returns the
// largest relative L2 error over the positions.
func checkMethod(d *vk.Device, f *gguf.File, meth treeattn.Method, kv treeattn.KVType, tokens []int32, want [][]float64) (float64, error) {
	m, err := model.Load(d, f, model.Options{Method: meth, KV: kv})
	if err != nil {
		return 0, err
	}
	defer m.Close()
	pool, err := model.NewPool(m, len(tokens)+kvpool.DefaultPageTokens)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	seq := pool.NewSequence()
	worst := 0.0
	// The prompt in one batch, every row's logits.
	if _, err := pool.Append(seq, checkPrompt); err != nil {
		return 0, err
	}
	qs := make([]kvpool.Query, checkPrompt)
	rows := make([]int, checkPrompt)
	for i := range qs {
		qs[i], rows[i] = kvpool.Query{Node: seq, Offset: i}, i
	}
	step, err := pool.Tree(qs)
	if err != nil {
		return 0, err
	}
	got, err := m.Forward(pool, model.Batch{Tokens: tokens[:checkPrompt], Step: step, LogitRows: rows})
	if err != nil {
		return 0, err
	}
	for i, g := range got {
		worst = max(worst, relL2(g, want[i]))
	}
	for i := checkPrompt; i < len(tokens); i++ {
		g, err := m.Eval(pool, seq, tokens[i:i+1])
		if err != nil {
			return 0, err
		}
		worst = max(worst, relL2(g, want[i]))
	}
	return worst, nil
}

// relL2 is |got - want| / |want|; NaN anywhere gives +Inf.
func relL2(got []float32, want []float64) float64 {
	var num, den float64
	for i, w := range want {
		g := float64(got[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return math.Inf(1)
		}
		num += (g - w) * (g - w)
		den += w * w
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

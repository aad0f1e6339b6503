package model

import (
	"bytes"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/modelgen"
	"github.com/deft-vk/deft/treeattn"
)

// tinyRandom writes modelgen's tiny model in a type and opens it.
func tinyRandom(t *testing.T, typeName string, seed uint64) (*gguf.File, RandomSpec) {
	t.Helper()
	cfg, err := modelgen.ShapeConfig("tiny")
	require.NoError(t, err)
	v, err := modelgen.SyntheticVocab(cfg.Vocab)
	require.NoError(t, err)
	types, err := modelgen.TensorTypes(typeName, cfg)
	require.NoError(t, err)
	var buf bytes.Buffer
	_, err = modelgen.Write(&buf, modelgen.Model{Config: cfg, TensorType: types, Seed: seed, Vocab: v}, nil)
	require.NoError(t, err)
	f, err := gguf.FromBytes("tiny-"+typeName+".gguf", buf.Bytes())
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f, RandomSpec{Config: cfg, TensorType: types, Seed: seed}
}

// The weights of a written random model, loaded from the file, and the
// same model generated on the GPU give bit-identical logits, which match
// the float64 reference of the file (the quantized-model tolerance).
// q4_k_m runs once the kernels read Q4_K and Q6_K; until then both loads
// must refuse it with a clear error.
func TestLoadRandomEqualsFile(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	for _, typ := range modelgen.TypeNames() {
		t.Run(typ, func(t *testing.T) {
			seed := rng.Uint64()
			f, spec := tinyRandom(t, typ, seed)
			if _, ok := weightType(gguf.Q4_K); typ == "q4_k_m" && !ok {
				_, err := Load(d, f, Options{})
				require.ErrorContains(t, err, "Q4_K is not supported by the kernels")
				_, err = LoadRandom(d, spec, Options{})
				require.ErrorContains(t, err, "Q4_K is not supported by the kernels")
				t.Log("the kernels do not read Q4_K yet: q4_k_m is checked for a clear refusal only")
				return
			}
			fm, err := Load(d, f, Options{KV: treeattn.KVF32})
			require.NoError(t, err)
			defer fm.Close()
			rm, err := LoadRandom(d, spec, Options{KV: treeattn.KVF32})
			require.NoError(t, err)
			defer rm.Close()
			require.Equal(t, fm.WeightBytes(), rm.WeightBytes())
			ref := newRef(t, f).newSeq()
			pools := make([]*poolSeq, 2)
			for i, m := range []*Model{fm, rm} {
				pools[i] = newPoolSeq(t, m, 16)
			}
			tok := int32(1)
			worst := 0.0
			for i := range 5 {
				a, err := fm.Eval(pools[0].pool, pools[0].seq, []int32{tok})
				require.NoError(t, err)
				b, err := rm.Eval(pools[1].pool, pools[1].seq, []int32{tok})
				require.NoError(t, err)
				require.Equal(t, a, b, "position %d: file and GPU-generated weights differ", i)
				e := relL2(a, ref.eval(tok))
				worst = max(worst, e)
				require.Less(t, e, quantTol, "position %d", i)
				tok = argmax(a)
			}
			t.Logf("%s seed %d: identical logits; worst rel L2 %.2e against the float64 reference", typ, seed, worst)
		})
	}
}

// Weights reach the device in chunks (here 1000 bytes, not a multiple of
// any block) with progress reports; the device bytes are the file's.
func TestLoadChunked(t *testing.T) {
	d := gputest.Device(t)
	defer func(v uint64) { uploadChunkBytes = v }(uploadChunkBytes)
	uploadChunkBytes = 1000
	f, _ := tinyRandom(t, "q8_0", 11)
	var calls int
	var last, total uint64
	m, err := Load(d, f, Options{Progress: func(done, tot uint64) {
		require.Greater(t, done, last)
		require.LessOrEqual(t, done-last, uploadChunkBytes)
		calls++
		last, total = done, tot
	}})
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, total, last)
	require.GreaterOrEqual(t, uint64(calls), total/uploadChunkBytes)
	for _, w := range m.weights() {
		if w.views != nil {
			continue // a stack: its views are listed too
		}
		ten, err := f.Tensor(w.name)
		require.NoError(t, err)
		want := ten.Data
		if w.regrouped { // the grouped layout of the file's rows
			frb := int(w.ggufRowBytes())
			want = make([]byte, w.rows*w.rowBytes)
			for r := range w.rows {
				groupRow(want[r*w.rowBytes:(r+1)*w.rowBytes], ten.Data[r*frb:(r+1)*frb], ten.Type.BlockBytes(), w.dOff)
			}
		}
		var got []byte
		for _, p := range w.parts {
			b := make([]byte, uint64(p.rows)*uint64(w.rowBytes))
			require.NoError(t, p.buf.Read(p.off, b))
			got = append(got, b...)
		}
		require.True(t, bytes.Equal(want, got), w.name)
	}
}

// A model larger than the device's memory (here a fake limit) is refused
// before anything is uploaded, with the sizes in the message.
func TestLoadMemoryCheck(t *testing.T) {
	d := gputest.Device(t)
	f, spec := tinyRandom(t, "f16", 1)
	uploaded := false
	progress := func(done, total uint64) { uploaded = true }
	_, err := Load(d, f, Options{MemoryLimit: 1 << 20, Progress: progress})
	require.ErrorContains(t, err, "does not fit the device")
	require.ErrorContains(t, err, "GiB of weights")
	_, err = LoadRandom(d, spec, Options{MemoryLimit: 1 << 20, Progress: progress})
	require.ErrorContains(t, err, "does not fit the device")
	require.False(t, uploaded)
	// The real limit: llama3-8b in F32 (32 GB) does not fit lavapipe's
	// heap here, checked before any buffer is made.
	big, err := modelgen.ShapeConfig("llama3-8b")
	require.NoError(t, err)
	types, err := modelgen.TensorTypes("f32", big)
	require.NoError(t, err)
	if mem := deviceMemory(&d.Info); mem < 30<<30 {
		_, err = LoadRandom(d, RandomSpec{Config: big, TensorType: types}, Options{Progress: progress})
		require.ErrorContains(t, err, "does not fit the device")
		require.False(t, uploaded)
	} else {
		t.Logf("device has %.0f GiB: the llama3-8b F32 refusal is not checked", math.Floor(gib(mem)))
	}
}

// poolSeq is a KV pool with one sequence, closed with the test.
type poolSeq struct {
	pool *kvpool.Pool
	seq  *kvpool.Node
}

func newPoolSeq(t *testing.T, m *Model, tokens int) *poolSeq {
	p, err := NewPool(m, tokens)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return &poolSeq{pool: p, seq: p.NewSequence()}
}

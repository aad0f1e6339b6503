package model

import (
	"fmt"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// uploadChunkBytes is the most bytes of a tensor copied to the device at a
// time: vk.Buffer.Write stages its data through one fixed staging buffer, so
// the host never holds more than a chunk beyond the file's memory map.
// Tests make it small.
var uploadChunkBytes uint64 = 64 << 20

// MinKVTokens is the KV pool, in tokens, that a model must leave room for
// in device memory besides its weights to load.
const MinKVTokens = MinChunkTokens

// source is where a model's weights come from: a GGUF file or the random
// generator.
type source interface {
	label() string
	// tensorType is the type of a tensor.
	tensorType(name string) (gguf.TensorType, error)
	// fill writes every part of a weight allocated by newWeight.
	fill(d *vk.Device, w *weight, prog *progress) error
	// vector returns a 1-D tensor of n elements as float32.
	vector(name string, n int) ([]float32, error)
}

// matSpec is a weight matrix of the forward pass.
type matSpec struct {
	name       string
	cols, rows int
}

// matrices lists the model's weight matrices in upload order.
func matrices(c Config) []matSpec {
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	ms := []matSpec{{"token_embd.weight", c.Embd, c.Vocab}}
	if !c.TiedOutput {
		ms = append(ms, matSpec{"output.weight", c.Embd, c.Vocab})
	}
	for i := range c.Blocks {
		p := fmt.Sprintf("blk.%d.", i)
		ms = append(ms,
			matSpec{p + "attn_q.weight", c.Embd, qDim},
			matSpec{p + "attn_k.weight", c.Embd, kvDim},
			matSpec{p + "attn_v.weight", c.Embd, kvDim},
			matSpec{p + "attn_output.weight", qDim, c.Embd},
			matSpec{p + "ffn_gate.weight", c.Embd, c.FFN},
			matSpec{p + "ffn_up.weight", c.Embd, c.FFN},
			matSpec{p + "ffn_down.weight", c.FFN, c.Embd})
	}
	return ms
}

// progress counts uploaded bytes for Options.Progress.
type progress struct {
	done, total uint64
	fn          func(done, total uint64)
}

func (p *progress) add(n uint64) {
	if p == nil {
		return
	}
	p.done += n
	if p.fn != nil {
		p.fn(p.done, p.total)
	}
}

// writeChunks copies data to the start of buf in chunks of uploadChunkBytes.
func writeChunks(buf *vk.Buffer, data []byte, prog *progress) error {
	return writeChunksAt(buf, 0, data, prog)
}

// writeChunksAt copies data to buf at byte offset at in chunks of
// uploadChunkBytes.
func writeChunksAt(buf *vk.Buffer, at uint64, data []byte, prog *progress) error {
	for off := uint64(0); off < uint64(len(data)); off += uploadChunkBytes {
		end := min(off+uploadChunkBytes, uint64(len(data)))
		if err := buf.Write(at+off, data[off:end]); err != nil {
			return err
		}
		prog.add(end - off)
	}
	return nil
}

// deviceMemory is the memory a model may use: the largest device-local
// heap (every buffer of ours lives in one memory type, so in one heap).
func deviceMemory(info *vk.DeviceInfo) uint64 {
	var best, any uint64
	for _, h := range info.MemoryHeaps {
		any = max(any, h.Size)
		if h.DeviceLocal {
			best = max(best, h.Size)
		}
	}
	if best == 0 {
		return any
	}
	return best
}

// planMemory returns the encoded bytes of the model's matrices and checks
// that they, a minimum KV pool and the vectors fit the device.
func planMemory(d *vk.Device, c Config, src source, opts Options) (uint64, error) {
	var weights, data uint64
	for _, m := range matrices(c) {
		typ, err := src.tensorType(m.name)
		if err != nil {
			return 0, fmt.Errorf("model: %w", err)
		}
		if _, ok := weightType(typ); !ok {
			return 0, fmt.Errorf("model: %s: %s: tensor type %s is not supported by the kernels", src.label(), m.name, typ)
		}
		parts, rb, err := planParts(d, m.name, typ, []uint64{uint64(m.cols), uint64(m.rows)}, 0)
		if err != nil {
			return 0, fmt.Errorf("model: %s: %w", src.label(), err)
		}
		data += rb * uint64(m.rows)
		weights += rb*uint64(m.rows) + uint64(len(parts))*wordPad
	}
	vectors := uint64(4 * c.Embd * (2*c.Blocks + 1))
	kc := kvpool.Config{Layers: c.Blocks, KVHeads: c.KVHeads, HeadDim: c.HeadDim, KV: opts.KV}
	kv := uint64(ceilDiv(MinKVTokens, kvpool.DefaultPageTokens)) * kc.PageBytes()
	limit := opts.MemoryLimit
	if limit == 0 {
		limit = deviceMemory(&d.Info)
	}
	if need := weights + vectors + kv; limit > 0 && need > limit {
		return 0, fmt.Errorf("model: %s does not fit the device: %.2f GiB of weights and %.2f GiB for a KV pool of %d tokens, but %s has %.2f GiB of device memory",
			src.label(), gib(weights+vectors), gib(kv), MinKVTokens, d.Info.Name, gib(limit))
	}
	return data, nil
}

func gib(n uint64) float64 { return float64(n) / (1 << 30) }

// build makes a model of configuration cfg on d with weights from src.
func build(d *vk.Device, cfg Config, src source, opts Options) (*Model, error) {
	if opts.Method == "" {
		opts.Method = treeattn.MethodFlatten
	}
	if opts.ChunkTokens <= 0 {
		limit := opts.MemoryLimit
		if limit == 0 {
			limit = deviceMemory(&d.Info)
		}
		opts.ChunkTokens = autoChunkTokens(cfg, limit)
	}
	if opts.ChunkTokens > treeattn.MaxShapeValue {
		return nil, fmt.Errorf("model: load: chunk of %d tokens is too large", opts.ChunkTokens)
	}
	if _, err := treeattn.ParseMethod(string(opts.Method)); err != nil {
		return nil, fmt.Errorf("model: load: %w", err)
	}
	switch opts.GemmInputs {
	case GemmInputsAuto, GemmInputsF16, GemmInputsF32:
	default:
		return nil, fmt.Errorf("model: load: gemm inputs %q: want %q, %q or empty (automatic)", opts.GemmInputs, GemmInputsF16, GemmInputsF32)
	}
	if cfg.HeadDim%4 != 0 {
		return nil, fmt.Errorf("model: load %s: head dim %d; tree attention needs a multiple of 4", src.label(), cfg.HeadDim)
	}
	total, err := planMemory(d, cfg, src, opts)
	if err != nil {
		return nil, err
	}
	prog := &progress{total: total, fn: opts.Progress}
	m := &Model{d: d, cfg: cfg, opts: opts, ops: newOps(d)}
	fail := func(err error) (*Model, error) {
		m.Close()
		return nil, err
	}
	// Every weight is reachable from m as soon as it exists, so that fail
	// frees it.
	m.layers = make([]layer, cfg.Blocks)
	slots := map[string]**weight{"token_embd.weight": &m.embd, "output.weight": &m.output}
	for i := range m.layers {
		p, L := fmt.Sprintf("blk.%d.", i), &m.layers[i]
		for name, dst := range map[string]**weight{"attn_q": &L.q, "attn_k": &L.k, "attn_v": &L.v, "attn_output": &L.o,
			"ffn_gate": &L.gate, "ffn_up": &L.up, "ffn_down": &L.down} {
			slots[p+name+".weight"] = dst
		}
	}
	done := map[string]bool{}
	for i := range m.layers {
		if err := m.stackLayer(d, src, i, done, prog); err != nil {
			return fail(err)
		}
	}
	for _, ms := range matrices(cfg) {
		if done[ms.name] {
			continue
		}
		typ, err := src.tensorType(ms.name)
		if err != nil {
			return fail(fmt.Errorf("model: %w", err))
		}
		w, err := newWeight(d, ms.name, typ, []uint64{uint64(ms.cols), uint64(ms.rows)}, 0)
		if err != nil {
			return fail(fmt.Errorf("model: upload %w", err))
		}
		*slots[ms.name] = w
		if err := src.fill(d, w, prog); err != nil {
			return fail(fmt.Errorf("model: upload %s: %w", ms.name, err))
		}
	}
	if cfg.TiedOutput {
		m.output = m.embd
	}

	vec := func(name string, n int) (*vk.Buffer, error) {
		v, err := src.vector(name, n)
		if err != nil {
			return nil, fmt.Errorf("model: %s: %w", src.label(), err)
		}
		return m.upload(name, v)
	}
	c := cfg
	if m.outNorm, err = vec("output_norm.weight", c.Embd); err != nil {
		return fail(err)
	}
	inv := invFreqs(c)
	inv32 := make([]float32, max(len(inv), 1))
	for i, v := range inv {
		inv32[i] = float32(v)
	}
	if m.invFreq, err = m.upload("rope frequencies", inv32); err != nil {
		return fail(err)
	}
	for i := range c.Blocks {
		p := fmt.Sprintf("blk.%d.", i)
		L := &m.layers[i]
		if L.attnNorm, err = vec(p+"attn_norm.weight", c.Embd); err != nil {
			return fail(err)
		}
		if L.ffnNorm, err = vec(p+"ffn_norm.weight", c.Embd); err != nil {
			return fail(err)
		}
	}
	m.ws = treeattn.NewWorkspace(d)
	if m.rec, err = d.NewRecorder(); err != nil {
		return fail(fmt.Errorf("model: load: %w", err))
	}
	return m, nil
}

// fileSource reads weights from a GGUF file's memory map.
type fileSource struct{ f *gguf.File }

func (s fileSource) label() string { return s.f.Name() }

func (s fileSource) tensorType(name string) (gguf.TensorType, error) {
	t, err := s.f.Tensor(name)
	return t.Type, err
}

func (s fileSource) fill(d *vk.Device, w *weight, prog *progress) error {
	t, err := s.f.Tensor(w.name)
	if err != nil {
		return err
	}
	return w.writeTensor(t.Data, prog)
}

func (s fileSource) vector(name string, n int) ([]float32, error) {
	t, err := s.f.Tensor(name)
	if err != nil {
		return nil, err
	}
	if t.Elements() != uint64(n) {
		return nil, fmt.Errorf("%s has %d elements, want %d", name, t.Elements(), n)
	}
	v, err := decodeFloats(t.Type, t.Data, n)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

// stackLayer allocates and fills the stacked matrices of block i (see
// layer): Q, K and V in runs of one type, gate with up when their types
// match, each stack when it fits one binding and its matrices start at
// offsets the device can bind. Stacked names are marked in done.
func (m *Model) stackLayer(d *vk.Device, src source, i int, done map[string]bool, prog *progress) error {
	c := m.cfg
	p, L := fmt.Sprintf("blk.%d.", i), &m.layers[i]
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	type mat struct {
		name string
		rows int
		dst  **weight
		typ  gguf.TensorType
	}
	qkv := []mat{{p + "attn_q.weight", qDim, &L.q, 0}, {p + "attn_k.weight", kvDim, &L.k, 0}, {p + "attn_v.weight", kvDim, &L.v, 0}}
	ffn := []mat{{p + "ffn_gate.weight", c.FFN, &L.gate, 0}, {p + "ffn_up.weight", c.FFN, &L.up, 0}}
	for _, ms := range [][]mat{qkv, ffn} {
		for j := range ms {
			t, err := src.tensorType(ms[j].name)
			if err != nil {
				return fmt.Errorf("model: %w", err)
			}
			ms[j].typ = t
		}
	}
	// stack makes one weight of ms (one type) and fills its views; nil
	// when the device cannot bind the views.
	stack := func(ms []mat) (*weight, error) {
		rows := 0
		for _, mt := range ms {
			rows += mt.rows
		}
		w, err := newWeight(d, ms[0].name+"+", ms[0].typ, []uint64{uint64(c.Embd), uint64(rows)}, 0)
		if err != nil {
			return nil, fmt.Errorf("model: upload %w", err)
		}
		align := max(16, d.Info.MinStorageAlignment)
		if len(w.parts) != 1 || uint64(ms[0].rows*w.rowBytes)%align != 0 || uint64((rows-ms[len(ms)-1].rows)*w.rowBytes)%align != 0 {
			w.close()
			return nil, nil
		}
		row := 0
		for _, mt := range ms {
			v := *w
			v.name, v.rows, v.view, v.segs, v.views = mt.name, mt.rows, true, nil, nil
			v.parts = []weightPart{{buf: w.parts[0].buf, off: uint64(row * w.rowBytes), rows: mt.rows}}
			*mt.dst = &v
			w.views = append(w.views, &v)
			w.segs = append(w.segs, mt.rows)
			row += mt.rows
		}
		for _, v := range w.views {
			if err := src.fill(d, v, prog); err != nil {
				w.close()
				return nil, fmt.Errorf("model: upload %s: %w", v.name, err)
			}
			done[v.name] = true
		}
		return w, nil
	}
	// single makes a matrix of its own (the norm still fused).
	single := func(mt mat) (*weight, error) {
		w, err := newWeight(d, mt.name, mt.typ, []uint64{uint64(c.Embd), uint64(mt.rows)}, 0)
		if err != nil {
			return nil, fmt.Errorf("model: upload %w", err)
		}
		*mt.dst = w
		w.segs = []int{mt.rows}
		if err := src.fill(d, w, prog); err != nil {
			return nil, fmt.Errorf("model: upload %s: %w", mt.name, err)
		}
		done[mt.name] = true
		return w, nil
	}
	for j := 0; j < len(qkv); {
		k := j + 1
		for k < len(qkv) && qkv[k].typ == qkv[j].typ {
			k++
		}
		var w *weight
		var err error
		if k-j > 1 {
			if w, err = stack(qkv[j:k]); err != nil {
				return err
			}
		}
		if w != nil {
			L.qkv = append(L.qkv, w)
		} else {
			for _, mt := range qkv[j:k] {
				w, err := single(mt)
				if err != nil {
					return err
				}
				L.qkv = append(L.qkv, w)
			}
		}
		j = k
	}
	if ffn[0].typ == ffn[1].typ {
		w, err := stack(ffn)
		if err != nil {
			return err
		}
		if w != nil {
			w.glu = true
			L.gateUp = w
		}
	}
	return nil
}

// Package model runs the forward pass of GGUF Llama models on a Vulkan
// device. Weights stay in their file encoding (F32, F16, BF16, Q8_0, Q4_0,
// Q4_K, Q6_K; Q8_0, Q4_0 and Q6_K blocks regrouped so that their quants are
// 16-byte aligned) and are dequantized inside the kernels; activations are
// float32; the KV
// cache is a kvpool.Pool, and attention is treeattn's tree attention, so
// one forward pass evaluates any set of tokens of a decoding tree:
// a prompt, one new token per branch, or a speculative token tree.
//
// A decoder drives it step by step: it allocates the new tokens' KV slots in
// the pool (Append, Fork, Draft), builds the step's tree with one query per
// new token (pool.Tree), and calls Forward, which writes the tokens' K/V
// into those slots and returns the logits it was asked for. Eval does this
// for the common case of tokens appended to one node.
package model

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// DefaultChunkTokens is Options.ChunkTokens when 0: the most tokens one
// submission evaluates (longer batches, such as prompts, are run in chunks
// so that no dispatch grows with the prompt).
const DefaultChunkTokens = 256

// Options tune a Model.
type Options struct {
	// KV is the element type of the KV cache of pools made by NewPool
	// (the zero value is treeattn.KVF16).
	KV treeattn.KVType
	// Method is the tree-attention method ("" means flatten).
	Method treeattn.Method
	// ChunkTokens bounds the tokens of one submission (0: DefaultChunkTokens).
	ChunkTokens int
}

// Model is a Llama model on a device. It is not safe for concurrent use.
type Model struct {
	d       *vk.Device
	cfg     Config
	opts    Options
	embd    *weight
	output  *weight // embd when tied
	outNorm *vk.Buffer
	invFreq *vk.Buffer
	layers  []layer
	rec     *vk.Recorder
	ops     *ops
	s       scratch
	// Reused across steps: the attention planner and workspace, and the
	// slot list of the pool last used.
	planner  treeattn.Planner
	ws       *treeattn.Workspace
	slots    *kvpool.SlotList
	slotPool *kvpool.Pool
}

type layer struct {
	attnNorm, ffnNorm *vk.Buffer
	// qkv are Q, K and V stacked where consecutive ones share a type (one
	// matmul each, writing each segment to its own buffer): one weight for
	// most files, two for llama.cpp's Q4_K_M layers with a Q6_K attn_v.
	qkv []*weight
	o   *weight
	// gateUp holds (gate, up) row pairs when both have one type (one matmul
	// with SwiGLU); otherwise gate and up are separate.
	gateUp, gate, up, down *weight
}

// Load reads the hyper-parameters of f and uploads its weights to d.
// f may be closed afterwards.
func Load(d *vk.Device, f *gguf.File, opts Options) (*Model, error) {
	if d == nil || f == nil {
		return nil, errors.New("model: load: nil device or file")
	}
	cfg, err := llama.ConfigFrom(f)
	if err != nil {
		return nil, err
	}
	if opts.Method == "" {
		opts.Method = treeattn.MethodFlatten
	}
	if opts.ChunkTokens <= 0 {
		opts.ChunkTokens = DefaultChunkTokens
	}
	if opts.ChunkTokens > treeattn.MaxShapeValue {
		return nil, fmt.Errorf("model: load: chunk of %d tokens is too large", opts.ChunkTokens)
	}
	if _, err := treeattn.ParseMethod(string(opts.Method)); err != nil {
		return nil, fmt.Errorf("model: load: %w", err)
	}
	if cfg.HeadDim%4 != 0 {
		return nil, fmt.Errorf("model: load %s: head dim %d; tree attention needs a multiple of 4", f.Name(), cfg.HeadDim)
	}
	m := &Model{d: d, cfg: cfg, opts: opts, ops: newOps(d)}
	c := cfg
	qDim, kvDim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	fail := func(err error) (*Model, error) {
		m.Close()
		return nil, err
	}
	tensor := func(name string, cols, rows int) (gguf.Tensor, error) {
		t, err := f.Tensor(name)
		if err != nil {
			return t, fmt.Errorf("model: %w", err)
		}
		if len(t.Dims) != 2 || t.Dims[0] != uint64(cols) || t.Dims[1] != uint64(rows) {
			return t, fmt.Errorf("model: %s: %s has dims %v, want [%d %d]", f.Name(), name, t.Dims, cols, rows)
		}
		return t, nil
	}
	upload := func(t gguf.Tensor, pairs bool) (*weight, error) {
		w, err := uploadWeightLayout(d, t, 0, true, pairs)
		if err != nil {
			return nil, fmt.Errorf("model: upload %w", err)
		}
		return w, nil
	}
	mat := func(name string, cols, rows int) (*weight, error) {
		t, err := tensor(name, cols, rows)
		if err != nil {
			return nil, err
		}
		return upload(t, false)
	}
	// stacked uploads Q, K and V as few matmuls as their types allow.
	stacked := func(p string) ([]*weight, error) {
		var ts []gguf.Tensor
		for _, nr := range []struct {
			name string
			rows int
		}{{"attn_q.weight", qDim}, {"attn_k.weight", kvDim}, {"attn_v.weight", kvDim}} {
			t, err := tensor(p+nr.name, c.Embd, nr.rows)
			if err != nil {
				return nil, err
			}
			ts = append(ts, t)
		}
		var out []*weight
		for i := 0; i < len(ts); {
			j := i + 1
			for j < len(ts) && ts[j].Type == ts[i].Type {
				j++
			}
			t, segs, err := stackRows(ts[i:j])
			if err != nil {
				return out, fmt.Errorf("model: %w", err)
			}
			w, err := upload(t, false)
			if err != nil {
				return out, err
			}
			w.segs = segs
			out = append(out, w)
			i = j
		}
		return out, nil
	}
	vec := func(name string, n int) (*vk.Buffer, error) {
		t, err := f.Tensor(name)
		if err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
		if t.Elements() != uint64(n) {
			return nil, fmt.Errorf("model: %s: %s has %d elements, want %d", f.Name(), name, t.Elements(), n)
		}
		v, err := decodeFloats(t.Type, t.Data, n)
		if err != nil {
			return nil, fmt.Errorf("model: %s: %w", name, err)
		}
		return m.upload(name, v)
	}
	if m.embd, err = mat("token_embd.weight", c.Embd, c.Vocab); err != nil {
		return fail(err)
	}
	m.output = m.embd
	if !c.TiedOutput {
		if m.output, err = mat("output.weight", c.Embd, c.Vocab); err != nil {
			return fail(err)
		}
	}
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
		var l layer
		m.layers = append(m.layers, l)
		L := &m.layers[i]
		steps := []func() error{
			func() (err error) { L.attnNorm, err = vec(p+"attn_norm.weight", c.Embd); return },
			func() (err error) { L.ffnNorm, err = vec(p+"ffn_norm.weight", c.Embd); return },
			func() (err error) { L.qkv, err = stacked(p); return },
			func() (err error) { L.o, err = mat(p+"attn_output.weight", qDim, c.Embd); return },
			func() error {
				g, err := tensor(p+"ffn_gate.weight", c.Embd, c.FFN)
				if err != nil {
					return err
				}
				u, err := tensor(p+"ffn_up.weight", c.Embd, c.FFN)
				if err != nil {
					return err
				}
				if g.Type != u.Type {
					if L.gate, err = upload(g, false); err == nil {
						L.up, err = upload(u, false)
					}
					return err
				}
				t, err := pairRows(g, u)
				if err != nil {
					return fmt.Errorf("model: %w", err)
				}
				L.gateUp, err = upload(t, true)
				return err
			},
			func() (err error) { L.down, err = mat(p+"ffn_down.weight", c.FFN, c.Embd); return },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return fail(err)
			}
		}
	}
	m.ws = treeattn.NewWorkspace(d)
	if m.rec, err = d.NewRecorder(); err != nil {
		return fail(fmt.Errorf("model: load: %w", err))
	}
	return m, nil
}

func (m *Model) upload(name string, v []float32) (*vk.Buffer, error) {
	b, err := m.d.NewBuffer(uint64(4 * len(v)))
	if err == nil {
		err = b.WriteF32(0, v)
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("model: upload %s: %w", name, err)
	}
	return b, nil
}

// Config returns the model's hyper-parameters.
func (m *Model) Config() Config { return m.cfg }

// Options returns the options the model was loaded with, defaults filled in.
func (m *Model) Options() Options { return m.opts }

// Device returns the device the model lives on.
func (m *Model) Device() *vk.Device { return m.d }

// WeightBytes is the device memory of the weights.
func (m *Model) WeightBytes() uint64 {
	var n uint64
	for _, w := range m.weights() {
		n += w.bytes()
	}
	return n
}

func (m *Model) weights() []*weight {
	ws := []*weight{m.embd}
	if m.output != m.embd {
		ws = append(ws, m.output)
	}
	for _, l := range m.layers {
		ws = append(ws, l.qkv...)
		ws = append(ws, l.o, l.gateUp, l.gate, l.up, l.down)
	}
	return slices.DeleteFunc(ws, func(w *weight) bool { return w == nil })
}

// Close frees the model's device memory; the device must be idle.
func (m *Model) Close() {
	if m == nil {
		return
	}
	for _, w := range m.weights() {
		w.close()
	}
	for _, l := range m.layers {
		l.attnNorm.Close()
		l.ffnNorm.Close()
	}
	m.layers = nil
	m.outNorm.Close()
	m.invFreq.Close()
	m.s.close()
	if m.ws != nil {
		m.ws.Close()
		m.ws = nil
	}
	if m.slots != nil {
		m.slots.Close()
		m.slots = nil
	}
	m.rec.Close()
	m.rec = nil
}

// NewPool makes a KV pool for the model (its layers, KV heads, head dim and
// Options.KV) that holds maxKVTokens tokens in whole pages. A branching
// decoder needs room for each branch's partly filled last page too.
func NewPool(m *Model, maxKVTokens int) (*kvpool.Pool, error) {
	if maxKVTokens < 1 {
		return nil, fmt.Errorf("model: new pool: %d tokens", maxKVTokens)
	}
	c := kvpool.Config{Layers: m.cfg.Blocks, KVHeads: m.cfg.KVHeads, HeadDim: m.cfg.HeadDim, KV: m.opts.KV}
	c.BudgetBytes = uint64(ceilDiv(maxKVTokens, kvpool.DefaultPageTokens)) * c.PageBytes()
	p, err := kvpool.New(m.d, c)
	if err != nil {
		return nil, fmt.Errorf("model: new pool of %d tokens: %w", maxKVTokens, err)
	}
	return p, nil
}

// Batch is one forward pass: tokens of a decoding tree whose KV slots are
// allocated in the pool and whose queries are in Step.
type Batch struct {
	// Tokens are the token ids to evaluate.
	Tokens []int32
	// Step is the pool's tree for this pass (pool.Tree) with one query per
	// token, in token order: query i is token i's own position, so token i
	// attends to its ancestors and itself. When the batch has more than
	// Options.ChunkTokens tokens, every token's predecessor in its sequence,
	// if it is in the batch, must come before it (any depth-first or
	// breadth-first order of a tree does).
	Step *kvpool.Step
	// Positions are the RoPE positions of the tokens; nil means each token's
	// depth in the pool's tree (its index in its sequence).
	Positions []int32
	// LogitRows lists the tokens whose logits Forward returns, in the order
	// wanted; nil returns none.
	LogitRows []int
}

// Forward evaluates a batch: it writes the tokens' K and V into their slots
// of every layer of pool and returns the logits of the tokens in
// LogitRows (float32, one slice of Config().Vocab per entry). On error the
// K/V of the batch's slots are undefined.
func (m *Model) Forward(pool *kvpool.Pool, b Batch) ([][]float32, error) {
	n := len(b.Tokens)
	if err := m.check(pool, &b); err != nil {
		return nil, fmt.Errorf("model: forward of %d tokens: %w", n, err)
	}
	slots := make([]int32, n)
	for i, q := range b.Step.Tree.Queries {
		slots[i] = b.Step.Tree.Nodes[q.Node].Slots[q.Offset]
	}
	pos := b.Positions
	if pos == nil {
		pos = make([]int32, n)
		for i, q := range b.Step.Queries {
			pos[i] = int32(q.Node.Len() - q.Node.Tokens() + q.Offset)
		}
	}
	chunk := m.opts.ChunkTokens
	if err := m.s.ensure(m, min(n, chunk), len(b.LogitRows)); err != nil {
		return nil, fmt.Errorf("model: forward: %w", err)
	}
	for c0 := 0; c0 < n; c0 += chunk {
		c1 := min(n, c0+chunk)
		if err := m.runChunk(pool, &b, slots, pos, c0, c1, c1 == n); err != nil {
			return nil, fmt.Errorf("model: forward of %d tokens: %w", n, err)
		}
	}
	out := make([][]float32, len(b.LogitRows))
	if len(out) == 0 {
		return out, nil
	}
	flat := make([]float32, len(out)*m.cfg.Vocab)
	if err := m.s.logits.ReadF32(0, flat); err != nil {
		return nil, fmt.Errorf("model: forward: read logits: %w", err)
	}
	for i := range out {
		out[i] = flat[i*m.cfg.Vocab : (i+1)*m.cfg.Vocab : (i+1)*m.cfg.Vocab]
	}
	return out, nil
}

// check validates a batch against the model and the pool.
func (m *Model) check(pool *kvpool.Pool, b *Batch) error {
	n := len(b.Tokens)
	switch {
	case pool == nil:
		return errors.New("nil pool")
	case n == 0:
		return errors.New("no tokens")
	case b.Step == nil || b.Step.Tree == nil:
		return errors.New("no step (pool.Tree)")
	case len(b.Step.Tree.Queries) != n || len(b.Step.Queries) != n:
		return fmt.Errorf("the step has %d queries, one per token needs %d", len(b.Step.Tree.Queries), n)
	case b.Positions != nil && len(b.Positions) != n:
		return fmt.Errorf("%d positions", len(b.Positions))
	}
	pc := pool.Config()
	if pc.Layers != m.cfg.Blocks || pc.KVHeads != m.cfg.KVHeads || pc.HeadDim != m.cfg.HeadDim {
		return fmt.Errorf("pool of %d layers x %d KV heads x %d dims does not fit the model (%d x %d x %d)",
			pc.Layers, pc.KVHeads, pc.HeadDim, m.cfg.Blocks, m.cfg.KVHeads, m.cfg.HeadDim)
	}
	for i, t := range b.Tokens {
		if t < 0 || int(t) >= m.cfg.Vocab {
			return fmt.Errorf("token %d (entry %d) outside the vocabulary of %d", t, i, m.cfg.Vocab)
		}
	}
	for i, p := range b.Positions {
		if p < 0 {
			return fmt.Errorf("negative position %d (entry %d)", p, i)
		}
	}
	for i, r := range b.LogitRows {
		if r < 0 || r >= n {
			return fmt.Errorf("logit row %d (entry %d) outside the batch", r, i)
		}
	}
	if n > m.opts.ChunkTokens {
		return checkOrder(b.Step.Tree)
	}
	return nil
}

// checkOrder verifies that every query's predecessor in its sequence, when
// it is also a query, comes first: then the tokens a chunk of queries sees
// were all written by earlier chunks or by this one.
func checkOrder(t *treeattn.Tree) error {
	type tok struct{ node, off int }
	index := make(map[tok]int, len(t.Queries))
	for i, q := range t.Queries {
		index[tok{q.Node, q.Offset}] = i
	}
	for i, q := range t.Queries {
		prev := tok{q.Node, q.Offset - 1}
		if q.Offset == 0 {
			p := t.Nodes[q.Node].Parent
			if p < 0 {
				continue
			}
			prev = tok{p, t.Nodes[p].Tokens - 1}
		}
		if j, ok := index[prev]; ok && j > i {
			return fmt.Errorf("token %d comes before its predecessor, token %d; order the batch parents first", i, j)
		}
	}
	return nil
}

// runChunk records and submits tokens [c0, c1) of a batch; last adds the
// logits of every LogitRows entry.
func (m *Model) runChunk(pool *kvpool.Pool, b *Batch, slots, pos []int32, c0, c1 int, last bool) error {
	c := m.cfg
	s := &m.s
	n := c1 - c0
	toks := make([]uint32, n)
	for i, t := range b.Tokens[c0:c1] {
		toks[i] = uint32(t)
	}
	if err := s.tokens.WriteU32(0, toks); err != nil {
		return err
	}
	p32 := make([]uint32, n)
	for i, p := range pos[c0:c1] {
		p32[i] = uint32(p)
	}
	if err := s.pos.WriteU32(0, p32); err != nil {
		return err
	}
	list, err := m.slotList(pool, slots[c0:c1])
	if err != nil {
		return err
	}
	tree := &treeattn.Tree{Nodes: b.Step.Tree.Nodes, Queries: b.Step.Tree.Queries[c0:c1]}
	o, rec := m.ops, m.rec
	if err := rec.Reset(); err != nil {
		return err
	}
	plan, err := m.planner.Plan(tree, treeattn.Config{
		SlotsUnique: true, // a kvpool step: each slot belongs to one node
		Method:      m.opts.Method,
		Shape:       treeattn.Shape{QHeads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim},
		KV:          pool.Config().KV,
		Limits:      treeattn.LimitsOf(m.d.Info),
	})
	if err != nil {
		return err
	}
	dp, err := m.ws.Load(rec, plan)
	if err != nil {
		return err
	}
	rs := ropeShape{qHeads: c.Heads, kvHeads: c.KVHeads, headDim: c.HeadDim, ropeDims: c.RopeDims}
	if err := o.embed(rec, m.embd, s.tokens, n, s.h); err != nil {
		return err
	}
	eps := c.RMSEps
	for li, l := range m.layers {
		// Per layer: Q/K/V with the attention norm fused (1 or 2
		// dispatches), RoPE, the K/V write, attention, the output
		// projection with the residual add, gate/up with the FFN norm and
		// SwiGLU fused, and down with the residual add.
		if err := m.attnInput(rec, l, n); err != nil {
			return fmt.Errorf("layer %d: %w", li, err)
		}
		steps := []func() error{
			func() error { return o.rope(rec, rs, s.q, s.k, s.pos, m.invFreq, n) },
			func() error { return pool.Write(rec, li, list, s.k, s.v) },
			func() error { return dp.Run(rec, s.q, pool.K(li), pool.V(li), s.att) },
			func() error { return o.matmul(rec, l.o, s.att, n, s.h, true) },
			func() error {
				if l.gateUp != nil {
					return o.matmulFused(rec, l.gateUp, s.h, n, []*vk.Buffer{s.gate}, false, l.ffnNorm, eps)
				}
				if err := o.matmulFused(rec, l.gate, s.h, n, []*vk.Buffer{s.gate}, false, l.ffnNorm, eps); err != nil {
					return err
				}
				if err := o.matmulFused(rec, l.up, s.h, n, []*vk.Buffer{s.up}, false, l.ffnNorm, eps); err != nil {
					return err
				}
				return o.swiglu(rec, s.gate, s.up, n*c.FFN)
			},
			func() error { return o.matmul(rec, l.down, s.gate, n, s.h, true) },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("layer %d: %w", li, err)
			}
		}
	}
	// Keep the final hidden state of the rows whose logits are wanted.
	row := uint64(4 * c.Embd)
	for i, r := range b.LogitRows {
		if r >= c0 && r < c1 {
			if err := rec.CopyRange(s.hsel, uint64(i)*row, s.h, uint64(r-c0)*row, row); err != nil {
				return err
			}
		}
	}
	if last && len(b.LogitRows) > 0 {
		nl := len(b.LogitRows)
		if err := o.matmulFused(rec, m.output, s.hsel, nl, []*vk.Buffer{s.logits}, false, m.outNorm, c.RMSEps); err != nil {
			return err
		}
	}
	return rec.Submit()
}

// attnInput records Q, K and V of n tokens from the hidden state, the
// attention norm fused into each matmul.
func (m *Model) attnInput(rec *vk.Recorder, l layer, n int) error {
	s := &m.s
	outs := []*vk.Buffer{s.q, s.k, s.v}
	for _, w := range l.qkv {
		k := len(w.segs)
		if err := m.ops.matmulFused(rec, w, s.h, n, outs[:k], false, l.attnNorm, m.cfg.RMSEps); err != nil {
			return err
		}
		outs = outs[k:]
	}
	return nil
}

// stackRows stacks the rows of tensors of one type and row length (Q, K,
// V) into one tensor; segs are their row counts.
func stackRows(ts []gguf.Tensor) (gguf.Tensor, []int, error) {
	if len(ts) == 1 {
		return ts[0], []int{int(ts[0].Dims[1])}, nil
	}
	out := gguf.Tensor{Name: ts[0].Name, Type: ts[0].Type, Dims: []uint64{ts[0].Dims[0], 0}}
	var segs []int
	for _, t := range ts {
		rb, err := t.Type.RowBytes(t.Dims[0])
		if err != nil {
			return out, nil, fmt.Errorf("stack %s: %w", t.Name, err)
		}
		if t.Type != out.Type || t.Dims[0] != out.Dims[0] || uint64(len(t.Data)) < rb*t.Dims[1] {
			return out, nil, fmt.Errorf("stack %s onto %s: types, row lengths or data differ", t.Name, out.Name)
		}
		out.Name += "+" + t.Name
		out.Data = append(out.Data, t.Data[:rb*t.Dims[1]]...)
		out.Dims[1] += t.Dims[1]
		segs = append(segs, int(t.Dims[1]))
	}
	out.Name = strings.TrimPrefix(out.Name, ts[0].Name+"+")
	return out, segs, nil
}

// pairRows interleaves the rows of gate and up (same type and shape):
// gate row i, then up row i.
func pairRows(gate, up gguf.Tensor) (gguf.Tensor, error) {
	rb, err := gate.Type.RowBytes(gate.Dims[0])
	if err != nil {
		return gguf.Tensor{}, fmt.Errorf("pair %s: %w", gate.Name, err)
	}
	rows := gate.Dims[1]
	if up.Type != gate.Type || !slices.Equal(up.Dims, gate.Dims) || uint64(len(gate.Data)) < rb*rows || uint64(len(up.Data)) < rb*rows {
		return gguf.Tensor{}, fmt.Errorf("pair %s with %s: types, shapes or data differ", gate.Name, up.Name)
	}
	data := make([]byte, 0, 2*rb*rows)
	for i := range rows {
		data = append(data, gate.Data[i*rb:(i+1)*rb]...)
		data = append(data, up.Data[i*rb:(i+1)*rb]...)
	}
	return gguf.Tensor{Name: gate.Name + "+" + up.Name, Type: gate.Type, Dims: []uint64{gate.Dims[0], 2 * rows}, Data: data}, nil
}

// slotList returns the model's slot list for pool, set to slots.
func (m *Model) slotList(pool *kvpool.Pool, slots []int32) (*kvpool.SlotList, error) {
	if m.slots != nil && m.slotPool == pool {
		if err := m.slots.Set(slots); err != nil {
			return nil, err
		}
		return m.slots, nil
	}
	if m.slots != nil {
		m.slots.Close()
		m.slots = nil
	}
	list, err := pool.NewSlotList(slots)
	if err != nil {
		return nil, err
	}
	m.slots, m.slotPool = list, pool
	return list, nil
}

// scratch holds the activations of one chunk and the logit rows, grown as
// batches need and reused across steps.
type scratch struct {
	tokens, pos                   *vk.Buffer // [chunk] uint32
	h, xn, q, k, v, att, gate, up *vk.Buffer // [chunk][...] float32
	hsel, xsel, logits            *vk.Buffer // [logit rows][...] float32
	chunkCap, rowsCap             int
}

func (s *scratch) close() {
	for _, b := range []*vk.Buffer{s.tokens, s.pos, s.h, s.xn, s.q, s.k, s.v, s.att, s.gate, s.up, s.hsel, s.xsel, s.logits} {
		b.Close()
	}
	*s = scratch{}
}

// ensure grows the buffers to chunk tokens and rows logit rows (to powers of
// two, so that a decoder's growing batches reallocate rarely).
func (s *scratch) ensure(m *Model, chunk, rows int) error {
	c := m.cfg
	alloc := func(dst **vk.Buffer, elems int) error {
		(*dst).Close()
		b, err := m.d.NewBuffer(uint64(4 * max(elems, 1)))
		if err != nil {
			return fmt.Errorf("scratch of %d bytes: %w", 4*elems, err)
		}
		*dst = b
		return nil
	}
	if chunk > s.chunkCap {
		nc := min(nextPow2(chunk), m.opts.ChunkTokens)
		sizes := []struct {
			b     **vk.Buffer
			elems int
		}{
			{&s.tokens, nc}, {&s.pos, nc}, {&s.h, nc * c.Embd}, {&s.xn, nc * c.Embd},
			{&s.q, nc * c.Heads * c.HeadDim}, {&s.k, nc * c.KVHeads * c.HeadDim}, {&s.v, nc * c.KVHeads * c.HeadDim},
			{&s.att, nc * c.Heads * c.HeadDim}, {&s.gate, nc * c.FFN}, {&s.up, nc * c.FFN},
		}
		for _, sz := range sizes {
			if err := alloc(sz.b, sz.elems); err != nil {
				return err
			}
		}
		s.chunkCap = nc
	}
	if rows > s.rowsCap {
		nr := nextPow2(rows)
		if uint64(nr)*uint64(c.Vocab)*4 > math.MaxUint32 {
			nr = rows
		}
		for _, sz := range []struct {
			b     **vk.Buffer
			elems int
		}{{&s.hsel, nr * c.Embd}, {&s.xsel, nr * c.Embd}, {&s.logits, nr * c.Vocab}} {
			if err := alloc(sz.b, sz.elems); err != nil {
				return err
			}
		}
		s.rowsCap = nr
	}
	return nil
}

// Eval appends tokens to node (a sequence without children), evaluates
// them and returns the logits of the last one: prompt prefill and plain
// decoding. On error the appended tokens' K/V are undefined: prune the node.
func (m *Model) Eval(pool *kvpool.Pool, node *kvpool.Node, tokens []int32) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, errors.New("model: eval: no tokens")
	}
	if _, err := pool.Append(node, len(tokens)); err != nil {
		return nil, fmt.Errorf("model: eval: %w", err)
	}
	queries := make([]kvpool.Query, len(tokens))
	first := node.Tokens() - len(tokens)
	for i := range queries {
		queries[i] = kvpool.Query{Node: node, Offset: first + i}
	}
	step, err := pool.Tree(queries)
	if err != nil {
		return nil, fmt.Errorf("model: eval: %w", err)
	}
	logits, err := m.Forward(pool, Batch{Tokens: tokens, Step: step, LogitRows: []int{len(tokens) - 1}})
	if err != nil {
		return nil, err
	}
	return logits[0], nil
}

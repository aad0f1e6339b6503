// Package model runs the forward pass of GGUF Llama models on a Vulkan
// device. Weights stay in their file encoding (F32, F16, BF16, Q8_0, Q4_0,
// Q4_K, Q5_K, Q6_K; Q8_0, Q4_0 and Q6_K blocks regrouped so that their quants are
// 16-byte aligned) and are dequantized inside the kernels; activations are float32; the KV
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

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// DefaultChunkTokens is Options.ChunkTokens when 0: the most tokens one
// submission evaluates (longer batches, such as prompts, are run in chunks
// so that no dispatch grows with the prompt), lowered by halves, down to
// MinChunkTokens, while a chunk's activations (chunkBytes) would take more
// than a 32nd of the device memory. Only batches longer than 256 tokens
// (prefill, large trees) see the difference against the 256 of earlier
// versions: decoding steps are one chunk either way. Long chunks are what
// make prefill fast: a 4096 x 4096 projection of 2048 rows gives gemm 512
// tiles for the H200's 132 SMs (256 rows: 64), and each weight byte
// serves 2048 rows per read.
const DefaultChunkTokens = 2048

// MinChunkTokens is the smallest chunk the automatic choice makes.
const MinChunkTokens = 256

// chunkBytes is the device memory of the scratch activations of a chunk
// of tokens (scratch.ensure).
func chunkBytes(c Config, tokens int) uint64 {
	floats := 2*c.Embd + 2*c.Heads*c.HeadDim + 2*c.KVHeads*c.HeadDim + 2*c.FFN
	halves := max(c.Embd, c.Heads*c.HeadDim, c.FFN)
	return uint64(tokens) * uint64(4*floats+2*halves+8)
}

// autoChunkTokens is Options.ChunkTokens when 0 for a model of c with
// limit bytes of device memory (0: unknown).
func autoChunkTokens(c Config, limit uint64) int {
	chunk := DefaultChunkTokens
	for chunk > MinChunkTokens && limit > 0 && chunkBytes(c, chunk) > limit/32 {
		chunk /= 2
	}
	return chunk
}

// Options tune a Model.
type Options struct {
	// KV is the element type of the KV cache of pools made by NewPool
	// (the zero value is treeattn.KVF16).
	KV treeattn.KVType
	// Method is the tree-attention method ("" means flatten).
	Method treeattn.Method
	// ChunkTokens bounds the tokens of one submission (0: DefaultChunkTokens,
	// less where device memory is small; see DefaultChunkTokens).
	ChunkTokens int
	// GemmInputs is the type of the activations that batches feed gemm:
	// GemmInputsAuto (f16 with the cooperative-matrix gemm, whose products
	// round them to f16 anyway; f32 for the scalar gemm), GemmInputsF16
	// (tests: the f16 path on the scalar gemm) or GemmInputsF32
	// (benchmarks: the path that converts float32 tiles in every gemm
	// workgroup).
	GemmInputs string
	// Progress, when set, is called as weights reach the device with the
	// bytes done and the total.
	Progress func(done, total uint64)
	// MemoryLimit is the device memory the model may assume (0: the
	// device's largest device-local heap).
	MemoryLimit uint64
	// PrefetchBytes, when positive, makes decoding steps read up to this
	// many bytes of the weights that follow attention (the output
	// projection, then gate/up) beside each layer's attention dispatch, so
	// that they are in the L2 cache when their matmuls run: attention over
	// a few queries is latency-bound and leaves the memory bandwidth
	// mostly idle (shaders/l2_prefetch.comp). Results are unchanged; it
	// pays only where L2 holds the bytes besides attention's K/V. An
	// experiment, off by default: `deft bench generate --prefetch-mib`.
	PrefetchBytes uint64
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
	planner treeattn.Planner
	// The pool and Step.Layout the planner's last plan was of: a step of
	// the same layout only appends tokens, so PlanNext re-plans only what
	// changed (planOK is false before the first plan and after a failure).
	planPool   *kvpool.Pool
	planLayout uint64
	planOK     bool
	ws         *treeattn.Workspace
	slots      *kvpool.SlotList
	slotPool   *kvpool.Pool
	// noRoPEFusion keeps decoding steps on matmul then WriteRoPE (tests
	// compare the fused epilogue against it).
	noRoPEFusion bool
	// Benchmark timestamps (timing.go).
	timing Timing
	times  StepTimes
}

type layer struct {
	attnNorm, ffnNorm          *vk.Buffer
	q, k, v, o, gate, up, down *weight
	// qkv are Q, K and V stacked where consecutive ones share a type (one
	// matmul each, the attention norm fused, each segment written to its
	// own buffer), and gateUp gate and up stacked (one matmul with the FFN
	// norm and SwiGLU fused); q, k, v, gate and up are then views of them.
	// Decoding steps and batches use the stacks (batches: one gemm each,
	// gate and up to their own buffers, then SwiGLU).
	qkv    []*weight
	gateUp *weight
}

// Load reads the hyper-parameters of f and uploads its weights to d, in
// chunks from the file's memory map (Options.Progress reports them). A
// model whose weights and a minimum KV pool do not fit the device's
// memory is refused before any upload. f may be closed afterwards.
func Load(d *vk.Device, f *gguf.File, opts Options) (*Model, error) {
	if d == nil || f == nil {
		return nil, errors.New("model: load: nil device or file")
	}
	cfg, err := llama.ConfigFrom(f)
	if err != nil {
		return nil, err
	}
	return build(d, cfg, fileSource{f}, opts)
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
		ws = append(ws, l.gateUp, l.q, l.k, l.v, l.o, l.gate, l.up, l.down)
	}
	return slices.DeleteFunc(ws, func(w *weight) bool { return w == nil })
}

// Close frees the model's device memory; the device must be idle.
func (m *Model) Close() {
	if m == nil {
		return
	}
	for _, w := range m.weights() {
		if w != nil {
			w.close()
		}
	}
	for _, l := range m.layers {
		l.attnNorm.Close()
		l.ffnNorm.Close()
	}
	m.layers = nil
	m.outNorm.Close()
	m.invFreq.Close()
	m.s.close()
	m.ops.close()
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
	m.times = StepTimes{}
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
	if err := m.stamp(TimingStep, stampStart); err != nil {
		return err
	}
	appended := m.planOK && m.planPool == pool && m.planLayout == b.Step.Layout
	m.planOK = false
	plan, err := m.planner.PlanNext(tree, treeattn.Config{
		SlotsUnique: true, // a kvpool step: each slot belongs to one node
		Method:      m.opts.Method,
		Shape:       treeattn.Shape{QHeads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim},
		KV:          pool.Config().KV,
		Limits:      treeattn.LimitsOf(m.d.Info),
	}, appended)
	if err != nil {
		return err
	}
	m.planPool, m.planLayout, m.planOK = pool, b.Step.Layout, true
	dp, err := m.ws.Load(rec, plan)
	if err != nil {
		return err
	}
	rope := kvpool.RoPE{QHeads: c.Heads, Dims: c.RopeDims, Pos: s.pos, InvFreq: m.invFreq}
	if err := o.embed(rec, m.embd, s.tokens, n, s.h); err != nil {
		return err
	}
	if err := m.stamp(TimingKernels, "embed"); err != nil {
		return err
	}
	// Decoding steps (few rows, matmul) fuse the norms into the matmuls
	// that read them, compute Q/K/V and gate/up with one matmul each and
	// SwiGLU in gate/up's epilogue; batches (gemm) run the norms and
	// SwiGLU on their own, and Q/K/V and gate/up with one gemm per stack
	// that writes each matrix's output to its own buffer.
	_, batch, err := o.gemmFor(n)
	if err != nil {
		return err
	}
	f16, err := m.gemmF16(batch)
	if err != nil {
		return err
	}
	// in is what gemm reads of activations x (rows of cols floats): x, or
	// with f16 inputs its f16 copy, converted once here for all the gemms
	// that read it.
	in := func(x *vk.Buffer, cols int) (gemmIn, error) {
		if !f16 {
			return gemmIn{x: x}, nil
		}
		return gemmIn{x: s.xh, f16: true}, o.toF16(rec, x, s.xh, n*cols)
	}
	eps := c.RMSEps
	for li, l := range m.layers {
		// Decoding steps on one stacked Q/K/V weight apply RoPE and write
		// K and V into the pool in the matmul's epilogue (bit-identical to
		// WriteRoPE after it; one dispatch and barrier fewer per layer).
		fused := !batch && len(l.qkv) == 1 && ropeFusable(l.qkv[0]) && !m.noRoPEFusion
		steps := []func() error{
			func() error {
				if fused {
					kv, err := pool.FusedWrite(li, list)
					if err != nil {
						return err
					}
					return o.matmulRoPE(rec, l.qkv[0], s.h, n, s.q, l.attnNorm, eps,
						ropeWrite{kv: kv, pos: s.pos, freq: m.invFreq, headDim: c.HeadDim, ropeDims: c.RopeDims})
				}
				if !batch && l.qkv != nil {
					return m.attnInput(rec, l, n)
				}
				if err := o.rmsnorm(rec, s.h, l.attnNorm, n, c.Embd, eps, s.xn); err != nil {
					return err
				}
				x, err := in(s.xn, c.Embd)
				if err != nil {
					return err
				}
				if l.qkv != nil {
					// One gemm per stack (Q, K and V of one type: one).
					outs := []*vk.Buffer{s.q, s.k, s.v}
					for _, w := range l.qkv {
						k := len(w.segs)
						if err := o.linearSegs(rec, w, x, n, outs[:k]); err != nil {
							return err
						}
						outs = outs[k:]
					}
					return nil
				}
				if err := o.linearIn(rec, l.q, x, n, s.q, false); err != nil {
					return err
				}
				if err := o.linearIn(rec, l.k, x, n, s.k, false); err != nil {
					return err
				}
				return o.linearIn(rec, l.v, x, n, s.v, false)
			},
			// RoPE of Q and K fused with the K/V write into the pool
			// (bit-identical to o.rope then pool.Write; one dispatch).
			func() error {
				if fused {
					return nil
				}
				return pool.WriteRoPE(rec, li, list, s.q, s.k, s.v, rope)
			},
			func() error { return m.stamp(TimingAttention, stampAttn) },
			func() error {
				if err := dp.Run(rec, s.q, pool.K(li), pool.V(li), s.att); err != nil {
					return err
				}
				if batch || m.opts.PrefetchBytes == 0 {
					return nil
				}
				return o.prefetchWeights(rec, m.opts.PrefetchBytes, s.sinks[:], l.o, l.gateUp)
			},
			func() error { return m.stamp(TimingAttention, stampAttnEnd) },
			func() error {
				x, err := in(s.att, c.Heads*c.HeadDim)
				if err != nil {
					return err
				}
				return o.linearIn(rec, l.o, x, n, s.h, true)
			},
			func() error {
				if !batch && l.gateUp != nil {
					return o.matmulFused(rec, l.gateUp, s.h, n, []*vk.Buffer{s.gate}, false, l.ffnNorm, eps)
				}
				if err := o.rmsnorm(rec, s.h, l.ffnNorm, n, c.Embd, eps, s.xn); err != nil {
					return err
				}
				x, err := in(s.xn, c.Embd)
				if err != nil {
					return err
				}
				if l.gateUp != nil {
					// Gate and up in one gemm over the stack.
					if err := o.linearSegs(rec, l.gateUp, x, n, []*vk.Buffer{s.gate, s.up}); err != nil {
						return err
					}
				} else {
					if err := o.linearIn(rec, l.gate, x, n, s.gate, false); err != nil {
						return err
					}
					if err := o.linearIn(rec, l.up, x, n, s.up, false); err != nil {
						return err
					}
				}
				return o.swiglu(rec, s.gate, s.up, n*c.FFN)
			},
			func() error {
				x, err := in(s.gate, c.FFN)
				if err != nil {
					return err
				}
				return o.linearIn(rec, l.down, x, n, s.h, true)
			},
		}
		if len(steps) != len(stepLabels) {
			return fmt.Errorf("layer %d: %d steps but %d step labels", li, len(steps), len(stepLabels))
		}
		for i, step := range steps {
			if err := step(); err != nil {
				return fmt.Errorf("layer %d: %w", li, err)
			}
			if err := m.stamp(TimingKernels, stepLabels[i]); err != nil {
				return err
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
		_, batch, err := o.gemmFor(nl)
		if err != nil {
			return err
		}
		f16, err := m.gemmF16(batch)
		if err != nil {
			return err
		}
		x := gemmIn{x: s.xsel}
		if !batch {
			err = o.matmulFused(rec, m.output, s.hsel, nl, []*vk.Buffer{s.logits}, false, m.outNorm, c.RMSEps)
		} else if err = o.rmsnorm(rec, s.hsel, m.outNorm, nl, c.Embd, c.RMSEps, s.xsel); err == nil {
			if f16 {
				x = gemmIn{x: s.xselh, f16: true}
				err = o.toF16(rec, s.xsel, s.xselh, nl*c.Embd)
			}
			if err == nil {
				err = o.linearIn(rec, m.output, x, nl, s.logits, false)
			}
		}
		if err != nil {
			return err
		}
	}
	if err := m.stamp(TimingKernels, "logits"); err != nil {
		return err
	}
	if err := m.stamp(TimingStep, stampEnd); err != nil {
		return err
	}
	if err := rec.Submit(); err != nil {
		return err
	}
	return m.addTimes()
}

// stepLabels name the work of each of a layer's steps in runChunk for
// TimingKernels ("" after the attention timestamps themselves).
var stepLabels = [...]string{"qkv", "rope-kv-write", "", "", "", "o-proj", "gate-up", "down"}

// gemmF16 reports whether a step's gemms (batch) read f16 activations
// (Options.GemmInputs).
func (m *Model) gemmF16(batch bool) (bool, error) {
	if !batch {
		return false, nil
	}
	return m.ops.gemmF16Inputs(m.opts.GemmInputs)
}

// attnInput records Q, K and V of n tokens from the hidden state with the
// stacked weights, the attention norm fused into each matmul.
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
	tokens, pos                   *vk.Buffer                // [chunk] uint32
	h, xn, q, k, v, att, gate, up *vk.Buffer                // [chunk][...] float32
	xh                            *vk.Buffer                // [chunk][the widest gemm input] f16: gemm's f16 inputs
	hsel, xsel, logits            *vk.Buffer                // [logit rows][...] float32
	xselh                         *vk.Buffer                // [logit rows][embd] f16
	sinks                         [prefetchSinks]*vk.Buffer // [4] uint32 each: what l2_prefetch may write
	chunkCap, rowsCap             int
}

func (s *scratch) close() {
	for _, b := range []*vk.Buffer{s.tokens, s.pos, s.h, s.xn, s.q, s.k, s.v, s.att, s.gate, s.up, s.xh, s.hsel, s.xsel, s.xselh, s.logits, s.sinks[0], s.sinks[1], s.sinks[2], s.sinks[3]} {
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
			{&s.xh, ceilDiv(nc*max(c.Embd, c.Heads*c.HeadDim, c.FFN), 2)},
		}
		for _, sz := range sizes {
			if err := alloc(sz.b, sz.elems); err != nil {
				return err
			}
		}
		s.chunkCap = nc
	}
	for i := range s.sinks {
		if s.sinks[i] == nil {
			if err := alloc(&s.sinks[i], 4); err != nil {
				return err
			}
		}
	}
	if rows > s.rowsCap {
		nr := nextPow2(rows)
		if uint64(nr)*uint64(c.Vocab)*4 > math.MaxUint32 {
			nr = rows
		}
		for _, sz := range []struct {
			b     **vk.Buffer
			elems int
		}{{&s.hsel, nr * c.Embd}, {&s.xsel, nr * c.Embd}, {&s.xselh, ceilDiv(nr*c.Embd, 2)}, {&s.logits, nr * c.Vocab}} {
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

// Package kvpool is a paged, tree-structured KV cache on the GPU.
//
// A Pool holds the K and V of every layer of a model in device memory, one
// K and one V buffer per layer laid out [slot][kv_head][head_dim] (fp16 or
// fp32): exactly what treeattn reads, so DevicePlan.Run(rec, q, pool.K(l),
// pool.V(l), out) runs on the pool directly. Slots are handed out in pages
// of PageTokens consecutive slots, within a byte budget.
//
// Sequences form a tree of Nodes. A node is a run of tokens whose context is
// its ancestors' tokens, so forked branches share their prefix without
// copying it:
//
//   - NewSequence starts a top-level sequence; Fork(n) starts a branch of n.
//   - Append(n, k) allocates slots for k new tokens of n (n has no
//     children); the layers write their K/V with Write.
//   - Prune(n) releases n's subtree; pages without live tokens return to
//     the free list and are reused.
//   - Draft(n, parents) hangs a speculative token tree of 1-token draft
//     nodes under n; Accept(rec, n, path) commits the accepted path as n's
//     next tokens and releases the rest of the tree.
//   - Tree(queries) gives the treeattn.Tree of a decoding step.
//
// A page's reference count (refs) is the number of live tokens it holds,
// plus one while a node reserves its free tail (the page a sequence appends
// into, or pages reserved for a drafted token tree). A page is free exactly
// when its count is 0. Sharing is structural: a page is shared when the
// tokens in it are read by more than one live sequence (leaf), and Stats
// reports how many such pages there are and the bytes sharing saves.
//
// # Page size
//
// The attention kernels gather K/V rows by slot (every tree node carries its
// own slot list), so the page size does not change GPU work; it sets how
// memory is handed out. Each node with tokens leaves up to PageTokens-1
// slots of its last page unused, a forked branch starts on a fresh page, and
// pages are freed whole. BenchmarkFewShotStep and BenchmarkReasoningStep
// measure it: the share of allocated slots holding no token, averaged over
// the run, is 0.7, 1.5, 3.2, 6.4 and 12% for pages of 4, 8, 16, 32 and 64
// tokens decoding few-shot (4000-token prompt, 50 branches, 400 steps), and
// 1.4, 3.8, 5.5, 10.5 and 16% for a Tree-of-Thoughts-like tree, while the
// host time of a few-shot step (50 appends and the step's tree: 11-17 µs
// on a 2-core CPU) is the same for every size from 4 to 64. DefaultPageTokens = 8
// keeps the loss within a few percent while a page stays a contiguous run of
// rows (at least 1 KiB per layer for a head dim of 64 or more in fp16) and
// the page table small (one 24-byte entry per 8 tokens).
//
// # Forks and token trees
//
// A forked child starts on a fresh page, so no copy is made and no page is
// ever appended to by two nodes; the parent cannot grow while it has
// children (its new tokens would be visible to them) and keeps the free
// slots of its last page for when its children are gone.
//
// Speculative token trees are drafted with Draft: 1-token draft nodes whose
// slots continue their sequence's last page, consecutively in draft order.
// Accept(rec, n, path) makes the accepted draft tokens n's next tokens: a
// path already in place (the first-child chain in depth-first order) costs
// no copy, any other path is compacted on the GPU by an in-order move
// kernel. Accept also takes paths of ordinary nodes made with Fork and
// Append; their tokens are then copied into n's pages.
//
// # Tree building
//
// Tree reuses a cached node table: after appends only the nodes that grew
// are updated (their slot lists are shared with the pool, not copied), and
// after forks, prunes, drafts and accepts the table is rebuilt by one walk
// over the live nodes. Host work per step is therefore proportional to the
// nodes that changed (plus a copy of the node table's headers), never to
// the tokens held.
//
// A Pool is not safe for concurrent use.
package kvpool

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// DefaultPageTokens is the page size when Config.PageTokens is 0 (see the
// package documentation for why).
const DefaultPageTokens = 8

// Limits on Config values.
const (
	MaxLayers     = 1 << 10
	MaxPageTokens = 1 << 16
)

// Config describes a pool.
type Config struct {
	Layers  int // model layers, one K and one V buffer each
	KVHeads int
	HeadDim int // see treeattn.CheckHeadDim
	KV      treeattn.KVType
	// PageTokens is the number of slots per page; 0 means
	// DefaultPageTokens.
	PageTokens int
	// BudgetBytes bounds the device memory of K and V over all layers; the
	// pool holds as many whole pages as fit.
	BudgetBytes uint64
}

// RowBytes is the size of one slot of one layer's K (or V).
func (c Config) RowBytes() uint64 {
	return uint64(c.KVHeads) * uint64(c.HeadDim) * uint64(c.KV.Bytes())
}

// TokenBytes is the size of one token's K and V over all layers.
func (c Config) TokenBytes() uint64 { return 2 * uint64(c.Layers) * c.RowBytes() }

// PageBytes is the size of one page's K and V over all layers.
func (c Config) PageBytes() uint64 { return uint64(c.pageTokens()) * c.TokenBytes() }

func (c Config) pageTokens() int {
	if c.PageTokens == 0 {
		return DefaultPageTokens
	}
	return c.PageTokens
}

// validate checks the config and returns the number of pages the budget
// holds.
func (c Config) validate() (int, error) {
	switch {
	case c.Layers < 1 || c.Layers > MaxLayers:
		return 0, fmt.Errorf("layers %d outside [1, %d]", c.Layers, MaxLayers)
	case c.KVHeads < 1 || c.KVHeads > treeattn.MaxShapeValue:
		return 0, fmt.Errorf("KV heads %d outside [1, %d]", c.KVHeads, treeattn.MaxShapeValue)
	case treeattn.CheckHeadDim(c.HeadDim) != nil:
		return 0, treeattn.CheckHeadDim(c.HeadDim)
	case c.KV != treeattn.KVF16 && c.KV != treeattn.KVF32:
		return 0, fmt.Errorf("unknown KV type %d", c.KV)
	case c.PageTokens < 0 || c.PageTokens > MaxPageTokens:
		return 0, fmt.Errorf("page size %d tokens outside [1, %d] (0: default %d)", c.PageTokens, MaxPageTokens, DefaultPageTokens)
	}
	pages := c.BudgetBytes / c.PageBytes()
	if pages == 0 {
		return 0, fmt.Errorf("budget of %d bytes is less than one page (%d tokens x %d bytes per token over %d layers = %d bytes)",
			c.BudgetBytes, c.pageTokens(), c.TokenBytes(), c.Layers, c.PageBytes())
	}
	if pages*uint64(c.pageTokens()) > math.MaxInt32 {
		return 0, fmt.Errorf("budget of %d bytes gives %d slots, more than the %d a slot index can address",
			c.BudgetBytes, pages*uint64(c.pageTokens()), math.MaxInt32)
	}
	return int(pages), nil
}

// Pool is a paged KV cache for a tree of sequences. See the package
// documentation.
type Pool struct {
	cfg        Config
	pageTokens int
	numPages   int

	// Host bookkeeping.
	pages  []page
	free   []int32 // free pages, a stack (the most recently freed is reused first)
	root   *Node   // hidden, never has tokens; parent of top-level sequences
	nextID int
	nodes  int // live nodes, root excluded
	tokens int // live tokens
	moved  int64

	// Tree cache (tree.go).
	structDirty bool
	layout      uint64 // counts rebuilds of the tree cache (Step.Layout)
	cache       []treeattn.Node
	order       []*Node                 // pool node behind cache[i]
	defaults    []int                   // cache indices of the default queries
	roots       int                     // cache nodes without a parent
	dirty       []*Node                 // grown nodes whose cache entry is stale
	work        struct{ treeNodes int } // nodes visited building trees (tests)

	// Device side; nil for NewHost pools.
	d        *vk.Device
	k, v     []*vk.Buffer
	dummy    *vk.Buffer
	scatter  *kernels.Pipeline
	move     *kernels.Pipeline
	ropeKV   *kernels.Pipeline // WriteRoPE's, made at its first use
	rowWords uint32
}

const (
	kernelWorkgroup  = 64
	movesPerDispatch = kernels.KVScatterMoves
)

// New creates a pool on d. Every layer's K and V buffer must fit the
// device's maxStorageBufferRange (128 MiB on lavapipe); a larger budget is
// an error that says the largest that fits.
func New(d *vk.Device, cfg Config) (*Pool, error) {
	p, err := newHost(cfg)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, errors.New("kvpool: new pool: nil device")
	}
	layerBytes := uint64(p.numPages) * uint64(p.pageTokens) * cfg.RowBytes()
	if limit := uint64(d.Info.MaxStorageBufferRange); layerBytes > limit {
		fit := limit / (uint64(p.pageTokens) * cfg.RowBytes()) * cfg.PageBytes()
		return nil, fmt.Errorf("kvpool: new pool: a layer's K buffer would be %d bytes, above the device's maxStorageBufferRange of %d bytes; "+
			"use a budget of at most %d bytes (or fewer KV heads per pool)", layerBytes, limit, fit)
	}
	p.d = d
	p.rowWords = uint32(cfg.RowBytes() / 4)
	fail := func(err error) (*Pool, error) {
		p.Close()
		return nil, fmt.Errorf("kvpool: new pool: %w", err)
	}
	for l := range cfg.Layers {
		for _, dst := range []*[]*vk.Buffer{&p.k, &p.v} {
			b, err := d.NewBuffer(layerBytes)
			if err != nil {
				return fail(fmt.Errorf("layer %d: %w", l, err))
			}
			*dst = append(*dst, b)
		}
	}
	dummy, err := d.NewBuffer(16)
	if err != nil {
		return fail(err)
	}
	p.dummy = dummy
	f16 := uint32(0)
	if cfg.KV == treeattn.KVF16 {
		f16 = 1
	}
	for mode, dst := range []**kernels.Pipeline{&p.scatter, &p.move} {
		k, err := kernels.KVScatter.Pipeline(d, kernels.SpecValues{
			"local_size_x": kernelWorkgroup, "ROW_WORDS": p.rowWords, "KV_F16": f16, "MODE": uint32(mode)})
		if err != nil {
			return fail(err)
		}
		*dst = k
	}
	return p, nil
}

// NewHost creates a pool's bookkeeping without device memory, for
// planning and measurement (replaying a workload's page use and trees on
// the host): K, V, NewSlotList and Write are unavailable, and Accept records
// no copies (rec may be nil; Stats still counts the tokens it would move).
// The budget is not checked against any device limit.
func NewHost(cfg Config) (*Pool, error) { return newHost(cfg) }

// newHost creates the bookkeeping of a pool without device memory.
func newHost(cfg Config) (*Pool, error) {
	pages, err := cfg.validate()
	if err != nil {
		return nil, fmt.Errorf("kvpool: new pool: %w", err)
	}
	cfg.PageTokens = cfg.pageTokens()
	p := &Pool{cfg: cfg, pageTokens: cfg.PageTokens, numPages: pages, pages: make([]page, pages), free: make([]int32, pages)}
	for i := range p.free {
		p.free[i] = int32(pages - 1 - i) // page 0 is handed out first
	}
	p.root = &Node{p: p, id: 0, tail: -1, live: true, tidx: -1}
	p.structDirty = true
	return p, nil
}

// Close frees the pool's device memory; the device must not be using it.
func (p *Pool) Close() {
	for _, b := range append(append(p.k, p.v...), p.dummy) {
		b.Close()
	}
	p.k, p.v, p.dummy = nil, nil, nil
}

// Config returns the pool's configuration, PageTokens filled in.
func (p *Pool) Config() Config { return p.cfg }

// NumPages is the pool's capacity in pages.
func (p *Pool) NumPages() int { return p.numPages }

// NumSlots is the pool's capacity in slots (tokens).
func (p *Pool) NumSlots() int { return p.numPages * p.pageTokens }

// FreePages is the number of pages on the free list.
func (p *Pool) FreePages() int { return len(p.free) }

// K returns layer's K buffer, [slot][kv_head][head_dim] of the KV type
// (nil for a host-only or closed pool).
func (p *Pool) K(layer int) *vk.Buffer {
	if p.k == nil {
		return nil
	}
	return p.k[layer]
}

// V returns layer's V buffer, laid out like K.
func (p *Pool) V(layer int) *vk.Buffer {
	if p.v == nil {
		return nil
	}
	return p.v[layer]
}

// allocated reports whether slot lies in a page in use, below its
// allocation mark.
func (p *Pool) allocated(slot int32) bool {
	if slot < 0 || int(slot) >= p.NumSlots() {
		return false
	}
	pg := &p.pages[slot/int32(p.pageTokens)]
	return pg.refs > 0 && slot%int32(p.pageTokens) < pg.used
}

// SlotList is a list of slots on the device, the destinations of Write:
// made once per step and used for every layer.
type SlotList struct {
	p     *Pool
	buf   *vk.Buffer
	slots []int32
}

// NewSlotList checks slots (inside the pool, allocated, no repeats) and
// uploads them. Close it once the recorded writes have run.
func (p *Pool) NewSlotList(slots []int32) (*SlotList, error) {
	if p.d == nil || p.k == nil {
		return nil, errors.New("kvpool: new slot list: pool has no device memory (closed)")
	}
	if len(slots) == 0 {
		return nil, errors.New("kvpool: new slot list: no slots")
	}
	if err := p.checkSlots(slots); err != nil {
		return nil, fmt.Errorf("kvpool: new slot list: %w", err)
	}
	sorted := slices.Clone(slots)
	slices.Sort(sorted)
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return nil, fmt.Errorf("kvpool: new slot list: slot %d appears twice", sorted[i])
		}
	}
	buf, err := p.d.NewBuffer(uint64(len(slots)) * 4)
	if err != nil {
		return nil, fmt.Errorf("kvpool: new slot list: %w", err)
	}
	words := make([]uint32, len(slots))
	for i, s := range slots {
		words[i] = uint32(s)
	}
	if err := buf.WriteU32(0, words); err != nil {
		buf.Close()
		return nil, fmt.Errorf("kvpool: new slot list: %w", err)
	}
	return &SlotList{p: p, buf: buf, slots: slices.Clone(slots)}, nil
}

func (p *Pool) checkSlots(slots []int32) error {
	for i, s := range slots {
		if s < 0 || int(s) >= p.NumSlots() {
			return fmt.Errorf("slot %d (entry %d) outside the pool's %d slots", s, i, p.NumSlots())
		}
		if !p.allocated(s) {
			return fmt.Errorf("slot %d (entry %d) is not allocated to any token", s, i)
		}
	}
	return nil
}

// Len is the number of slots.
func (s *SlotList) Len() int { return len(s.slots) }

// Slots returns a copy of the slots.
func (s *SlotList) Slots() []int32 { return slices.Clone(s.slots) }

// Close frees the device copy; recorded writes using it must have run.
func (s *SlotList) Close() {
	s.buf.Close()
}

// Write records storing a step's new K and V rows of one layer into the
// pool: k and v are dense float32 [len(rows)][kv_head][head_dim] buffers and
// row i goes to slot rows.Slots()[i], converted to fp16 for an fp16 pool.
// The slots are checked again (still allocated) before recording.
func (p *Pool) Write(rec *vk.Recorder, layer int, rows *SlotList, k, v *vk.Buffer) error {
	op := fmt.Sprintf("kvpool: write layer %d", layer)
	switch {
	case p.k == nil:
		return fmt.Errorf("%s: pool has no device memory (closed)", op)
	case layer < 0 || layer >= p.cfg.Layers:
		return fmt.Errorf("%s: layer outside [0, %d)", op, p.cfg.Layers)
	case rec == nil || rows == nil || k == nil || v == nil:
		return fmt.Errorf("%s: nil recorder, slot list or buffer", op)
	case rows.p != p || rows.buf == nil:
		return fmt.Errorf("%s: slot list belongs to another pool or is closed", op)
	}
	n := uint64(len(rows.slots))
	need := n * uint64(p.cfg.KVHeads) * uint64(p.cfg.HeadDim) * 4
	if k.Size() < need || v.Size() < need {
		return fmt.Errorf("%s: K has %d bytes and V %d, %d rows x %d KV heads x %d dims of float32 need %d",
			op, k.Size(), v.Size(), n, p.cfg.KVHeads, p.cfg.HeadDim, need)
	}
	if err := p.checkSlots(rows.slots); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	groups := p.groups(n * uint64(p.rowWords))
	if err := p.scatter.Dispatch(rec, groups, kernels.KVScatterPush{N: uint32(n)}, k.Sub(0, need), v.Sub(0, need), rows.buf.All(), p.k[layer].All(), p.v[layer].All()); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// RoPE is the rotary position embedding WriteRoPE applies to a step's
// rows: llama.cpp's normal mode, as model's rope kernel (shaders/rope.comp).
type RoPE struct {
	QHeads int // query heads per row of q
	// Dims is the rotated dims per head: even, at most the pool's head
	// dim; 0 rotates nothing.
	Dims    int
	Pos     *vk.Buffer // int32 position of each row
	InvFreq *vk.Buffer // float32 inverse frequency of each of the Dims/2 rotated pairs
}

// WriteRoPE is Write with RoPE fused in, one dispatch instead of rope and
// Write: it rotates q ([len(rows)][r.QHeads][head_dim] float32) in place
// and stores the rotated k and v rows into the pool as Write does; k is
// only read (it stays unrotated). The results are bit-identical to
// rotating q and k first and writing k and v with Write (the kernels
// share their rotation code).
func (p *Pool) WriteRoPE(rec *vk.Recorder, layer int, rows *SlotList, q, k, v *vk.Buffer, r RoPE) error {
	op := fmt.Sprintf("kvpool: write layer %d with RoPE", layer)
	switch {
	case p.k == nil:
		return fmt.Errorf("%s: pool has no device memory (closed)", op)
	case layer < 0 || layer >= p.cfg.Layers:
		return fmt.Errorf("%s: layer outside [0, %d)", op, p.cfg.Layers)
	case rec == nil || rows == nil || q == nil || k == nil || v == nil || r.Pos == nil || r.InvFreq == nil:
		return fmt.Errorf("%s: nil recorder, slot list or buffer", op)
	case rows.p != p || rows.buf == nil:
		return fmt.Errorf("%s: slot list belongs to another pool or is closed", op)
	case p.cfg.HeadDim%2 != 0 || r.Dims < 0 || r.Dims%2 != 0 || r.Dims > p.cfg.HeadDim:
		return fmt.Errorf("%s: rotated dims %d must be even and at most the head dim %d (even)", op, r.Dims, p.cfg.HeadDim)
	case r.QHeads < 1:
		return fmt.Errorf("%s: %d query heads", op, r.QHeads)
	}
	n := uint64(len(rows.slots))
	need := n * uint64(p.cfg.KVHeads) * uint64(p.cfg.HeadDim) * 4
	needQ := n * uint64(r.QHeads) * uint64(p.cfg.HeadDim) * 4
	if k.Size() < need || v.Size() < need || q.Size() < needQ {
		return fmt.Errorf("%s: Q has %d bytes, K %d and V %d; %d rows x %d+%d heads x %d dims of float32 need %d and %d",
			op, q.Size(), k.Size(), v.Size(), n, r.QHeads, p.cfg.KVHeads, p.cfg.HeadDim, needQ, need)
	}
	if r.Pos.Size() < n*4 || r.InvFreq.Size() < uint64(max(r.Dims/2, 1))*4 {
		return fmt.Errorf("%s: %d positions and %d frequencies need %d and %d bytes, have %d and %d",
			op, n, r.Dims/2, n*4, max(r.Dims/2, 1)*4, r.Pos.Size(), r.InvFreq.Size())
	}
	if err := p.checkSlots(rows.slots); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if p.ropeKV == nil {
		f16 := uint32(0)
		if p.cfg.KV == treeattn.KVF16 {
			f16 = 1
		}
		pipe, err := kernels.RopeKV.Pipeline(p.d, kernels.SpecValues{"local_size_x": kernelWorkgroup, "KV_F16": f16})
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		p.ropeKV = pipe
	}
	total := n * uint64(r.QHeads+p.cfg.KVHeads) * uint64(p.cfg.HeadDim/2)
	groups := p.groups(total)
	if steps := (total + uint64(groups[0])*kernelWorkgroup - 1) / (uint64(groups[0]) * kernelWorkgroup); steps > kernels.GridStrideSteps {
		return fmt.Errorf("%s: %d pairs exceed a grid-stride dispatch", op, total)
	}
	push := kernels.RopeKVPush{N: uint32(n), QHeads: uint32(r.QHeads), KvHeads: uint32(p.cfg.KVHeads), HeadDim: uint32(p.cfg.HeadDim),
		RopeDims: uint32(r.Dims)}
	if err := p.ropeKV.Dispatch(rec, groups, push, q.Sub(0, needQ), k.Sub(0, need), v.Sub(0, need), r.Pos.All(), r.InvFreq.All(),
		rows.buf.All(), p.k[layer].All(), p.v[layer].All()); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// FusedWrite is what a kernel that stores a step's K and V rows itself
// binds in place of Write (model's Q/K/V matmul with RoPE in its epilogue,
// shaders/matmul_rope.comp): row i goes to slot Slots[i] of K and V, rows
// of Config().KVHeads x HeadDim elements, fp16 when F16 (else float32).
type FusedWrite struct {
	K, V     *vk.Buffer // the layer's pool buffers
	Slots    *vk.Buffer // uint32 [Rows]: the slot list's device copy
	Rows     int
	RowElems int // elements per slot: KV heads x head dim
	F16      bool
}

// FusedWrite checks what Write checks (the layer, the slot list, its slots
// still allocated) and returns the buffers a fused writer binds for layer.
func (p *Pool) FusedWrite(layer int, rows *SlotList) (FusedWrite, error) {
	op := fmt.Sprintf("kvpool: fused write of layer %d", layer)
	switch {
	case p.k == nil:
		return FusedWrite{}, fmt.Errorf("%s: pool has no device memory (closed)", op)
	case layer < 0 || layer >= p.cfg.Layers:
		return FusedWrite{}, fmt.Errorf("%s: layer outside [0, %d)", op, p.cfg.Layers)
	case rows == nil || rows.p != p || rows.buf == nil:
		return FusedWrite{}, fmt.Errorf("%s: slot list is nil, belongs to another pool or is closed", op)
	}
	if err := p.checkSlots(rows.slots); err != nil {
		return FusedWrite{}, fmt.Errorf("%s: %w", op, err)
	}
	return FusedWrite{K: p.k[layer], V: p.v[layer], Slots: rows.buf, Rows: len(rows.slots),
		RowElems: p.cfg.KVHeads * p.cfg.HeadDim, F16: p.cfg.KV == treeattn.KVF16}, nil
}

// groups is a grid-stride launch over n invocations.
func (p *Pool) groups(n uint64) [3]uint32 {
	g := (n + kernelWorkgroup - 1) / kernelWorkgroup
	g = max(1, min(g, uint64(p.d.Info.MaxWorkgroupCount[0])))
	return [3]uint32{uint32(g), 1, 1}
}

// recordMoves records copying pool rows moves[i][0] to moves[i][1] in
// order, in every layer's K and V.
func (p *Pool) recordMoves(rec *vk.Recorder, moves [][2]int32) error {
	groups := p.groups(uint64(p.rowWords))
	for l := range p.cfg.Layers {
		for c := 0; c < len(moves); c += movesPerDispatch {
			chunk := moves[c:min(c+movesPerDispatch, len(moves))]
			push := kernels.KVScatterPush{N: uint32(len(chunk))}
			for j, mv := range chunk {
				push.Pairs[2*j], push.Pairs[2*j+1] = uint32(mv[0]), uint32(mv[1])
			}
			d := p.dummy.All()
			if err := p.move.Dispatch(rec, groups, push, d, d, d, p.k[l].All(), p.v[l].All()); err != nil {
				return fmt.Errorf("layer %d: %w", l, err)
			}
		}
	}
	return nil
}

// Accept commits a verified speculative path: path[0] is a child of n and
// each path[i] a child of path[i-1]. Their tokens become n's next tokens,
// in path order, and every node below n is released (the rest of the token
// tree, and the path's nodes themselves, whose tokens now belong to n). It
// returns the slots of the accepted tokens in n.
//
// For a token tree made with Draft the accepted tokens stay in the tree's
// slots when they are already in place and are otherwise moved up by the
// kv_scatter kernel; no pages are needed. For ordinary nodes (Fork and
// Append) their K/V rows are copied into n's pages, which may need free
// pages (*FullError, nothing changed).
//
// Copies are recorded into rec (every layer) and must run before anything
// else writes to the pool: record later writes into rec too, or submit rec
// first. rec may be nil when no copy is needed (CopiesFor tells). If
// recording fails the pool is unchanged, and rec should be reset.
func (p *Pool) Accept(rec *vk.Recorder, n *Node, path []*Node) ([]int32, error) {
	op := fmt.Sprintf("accept %d-node path into %v", len(path), n)
	moves, m, err := p.planAccept(op, n, path)
	if err != nil {
		var full *FullError
		if errors.As(err, &full) {
			return nil, full
		}
		return nil, fmt.Errorf("kvpool: %s: %w", op, err)
	}
	if len(moves) > 0 && p.d != nil {
		if p.k == nil || rec == nil {
			return nil, fmt.Errorf("kvpool: %s: %d tokens must be copied, which needs a recorder and an open pool", op, len(moves))
		}
		if err := p.recordMoves(rec, moves); err != nil {
			return nil, fmt.Errorf("kvpool: %s: %w", op, err)
		}
	}
	p.moved += int64(len(moves))
	return p.commitAccept(n, m), nil
}

// CopiesFor returns how many tokens Accept(rec, n, path) would copy on the
// GPU (0: rec may be nil), or the error Accept would report.
func (p *Pool) CopiesFor(n *Node, path []*Node) (int, error) {
	op := fmt.Sprintf("accept %d-node path into %v", len(path), n)
	moves, _, err := p.planAccept(op, n, path)
	if err != nil {
		var full *FullError
		if errors.As(err, &full) {
			return 0, full
		}
		return 0, fmt.Errorf("kvpool: %s: %w", op, err)
	}
	return len(moves), nil
}

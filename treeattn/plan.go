package treeattn

import (
	"fmt"
	"math"
	"slices"

	"github.com/deft-vk/deft/kernels"
)

// Method names an attention strategy for a decoding tree.
type Method string

// The methods. All of them produce the same output; they differ in how the
// KV cache is grouped with queries, and so in memory traffic and balance.
const (
	// MethodFlatten is DeFT-Flatten: the tree's tokens laid out depth-first, cut
	// into equal blocks, each loaded once with every query that sees it
	// (KV-guided grouping) and a bitmask of which query sees which token.
	MethodFlatten Method = "flatten"
	// MethodNode is DeFT-Node: one work item per tree node, however long.
	MethodNode Method = "node"
	// MethodNodeChunk is DeFT-Node-Chunk: tree nodes split into chunks.
	MethodNodeChunk Method = "nodechunk"
	// MethodFlashDecoding is the query-guided baseline: each query reads its own
	// whole path in chunks (Flash-Decoding, radix attention).
	MethodFlashDecoding Method = "flashdecoding"
	// MethodDenseMask is the Medusa-style baseline: every query against every
	// tree token under a dense mask.
	MethodDenseMask Method = "densemask"
)

// Methods lists every method, DeFT's first.
var Methods = []Method{MethodFlatten, MethodNode, MethodNodeChunk, MethodFlashDecoding, MethodDenseMask}

// ParseMethod accepts a method name.
func ParseMethod(s string) (Method, error) {
	for _, m := range Methods {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("unknown attention method %q (have %v)", s, Methods)
}

// KVType is the element type of the K/V pool.
type KVType int

const (
	// KVF16 stores K and V as IEEE half floats.
	KVF16 KVType = iota
	// KVF32 stores K and V as 32-bit floats.
	KVF32
)

func (k KVType) String() string {
	if k == KVF32 {
		return "f32"
	}
	return "f16"
}

// Bytes is the size of one element.
func (k KVType) Bytes() int {
	if k == KVF32 {
		return 4
	}
	return 2
}

// Limits are the device limits planning depends on (from vk.DeviceInfo).
type Limits struct {
	SharedMemory      int
	MaxInvocations    int
	MaxWorkgroupCount [3]int
}

// Tiles are the kernel's tile sizes, chosen from the head dim and the
// device's shared memory.
type Tiles struct {
	Workgroup int // invocations per workgroup
	Tokens    int // B: tokens of K/V staged in shared memory at once
	Rows      int // R: (query, head) rows processed together
}

// sharedBytes is partial_attn.comp's shared memory for the tiles: Q rows
// and the K/V tile (vec4 rows padded by one), scores and probabilities
// ([token][row], padded), mask words, two tiles' slot lists, softmax
// scratch and row state (six words per row, sBad included).
func (t Tiles) sharedBytes(dim int) int {
	rowVec4s := dim/4 + 1
	scoreVec4s := t.Rows/4 + 1
	maskWords := (t.Rows-1)/32 + 2
	return 16*(t.Rows+t.Tokens)*rowVec4s + 2*16*t.Tokens*scoreVec4s + 4*t.Tokens*maskWords + 2*4*t.Tokens + 4*t.Workgroup + 6*4*t.Rows
}

func isPow2(v int) bool { return v > 0 && v&(v-1) == 0 }

// check validates tiles against the kernel's thread mappings (see the
// derived constants of partial_attn.comp) and the device.
func (t Tiles) check(s Shape, lim Limits) error {
	if !isPow2(t.Workgroup) || !isPow2(t.Tokens) || !isPow2(t.Rows) || t.Tokens < 4 || t.Rows < 4 ||
		t.Rows > t.Workgroup || t.Tokens > t.Workgroup || t.Rows*t.Tokens < t.Workgroup || t.Workgroup > lim.MaxInvocations {
		return fmt.Errorf("tiles %+v: sizes must be powers of two, tokens and rows at least 4 and at most the workgroup, "+
			"rows x tokens at least the workgroup, workgroup at most %d", t, lim.MaxInvocations)
	}
	if b := t.sharedBytes(s.HeadDim); b > lim.SharedMemory {
		return fmt.Errorf("tiles %+v need %d bytes of shared memory, the device has %d", t, b, lim.SharedMemory)
	}
	return nil
}

// ChooseTiles picks the tiles with the most work per shared-memory pass
// that fit the device: 256 invocations where allowed (on the H100, 32 x 32
// tiles ran few-shot b=50 in 330 us at 256 invocations, 427 us at 128 and
// 423 us at 512; the compiler's register use, 147 vs 182 per thread, sets
// how many workgroups stay resident), rows at most 32 (a slice of 8 queries
// of a group of 4; larger row tiles waste work on the many small items of a
// tree), tokens at most 64.
func ChooseTiles(s Shape, lim Limits) (Tiles, error) {
	if err := s.Validate(); err != nil {
		return Tiles{}, err
	}
	if s.HeadDim%4 != 0 || s.HeadDim > 512 {
		return Tiles{}, fmt.Errorf("choose tiles: head dim %d must be a multiple of 4 and at most 512", s.HeadDim)
	}
	if lim.MaxInvocations < 4 {
		return Tiles{}, fmt.Errorf("choose tiles: device allows only %d invocations per workgroup", lim.MaxInvocations)
	}
	best := Tiles{}
	bestScore := -1
	for _, wg := range []int{256, 128, 64, 32, 16, 8, 4} {
		for _, b := range []int{64, 32, 16, 8, 4} {
			for _, r := range []int{32, 16, 8, 4} {
				t := Tiles{Workgroup: wg, Tokens: b, Rows: r}
				if t.check(s, lim) != nil {
					continue
				}
				score := wg*1_000_000 + r*b*100 + r
				if score > bestScore {
					best, bestScore = t, score
				}
			}
		}
	}
	if bestScore < 0 {
		return Tiles{}, fmt.Errorf("choose tiles: head dim %d does not fit %d bytes of shared memory", s.HeadDim, lim.SharedMemory)
	}
	return best, nil
}

// Config selects a method and the shapes a plan is made for.
type Config struct {
	Method Method
	Shape  Shape
	KV     KVType
	// Scale multiplies q·k; 0 means 1/sqrt(HeadDim).
	Scale  float64
	Limits Limits
	// BlockTokens is the flatten/densemask block and the nodechunk and
	// flashdecoding chunk size in tokens; 0 chooses from the tree and tiles.
	BlockTokens int
	// Tiles overrides the tile sizes (zero: chosen by ChooseTiles); they
	// must fit the device's shared memory.
	Tiles Tiles
	// MaxPasses bounds one workgroup's shared-memory passes (row tiles x
	// token tiles); 0 means MaxTilePasses, larger values are capped by it.
	MaxPasses int
}

// IO is the memory traffic a plan causes per layer, in bytes.
type IO struct {
	KVBytes       int64 `json:"kv_bytes"`        // K and V read by the kernels (re-reads counted)
	KVUniqueBytes int64 `json:"kv_unique_bytes"` // K and V of every tree token once (the roofline's bytes; tokens no query reads included)
	MaskBytes     int64 `json:"mask_bytes"`      // bitmask words read
	PartialWrite  int64 `json:"partial_write_bytes"`
	PartialRead   int64 `json:"partial_read_bytes"`
	MetadataBytes int64 `json:"metadata_bytes"` // item table, slot lists, indices
	QueryBytes    int64 `json:"query_bytes"`    // Q read
	OutputBytes   int64 `json:"output_bytes"`   // final output written
	UniqueTokens  int   `json:"unique_tokens"`  // tokens in the tree
	PathTokens    int   `json:"path_tokens"`    // sum over queries of their path lengths
	Items         int   `json:"items"`          // work items (x KV heads = workgroups)
	Partials      int   `json:"partials"`       // (query, item) partial results
	MaskedPairs   int64 `json:"computed_pairs"` // (query, token) pairs computed, masked or not
}

// Total is every byte moved.
func (io IO) Total() int64 {
	return io.KVBytes + io.MaskBytes + io.PartialWrite + io.PartialRead + io.MetadataBytes + io.QueryBytes + io.OutputBytes
}

// Plan is the host-side schedule of one decoding step: made once per step,
// run for every layer. It holds the metadata the kernels read.
type Plan struct {
	Config
	Tiles      Tiles
	NumQueries int
	NumSlots   int
	Items      int
	Partials   int
	IO         IO

	meta       []uint32
	itemsOff   uint32
	offsetsOff uint32
	listOff    uint32
}

// work is one work item under construction.
type work struct {
	slots   []int32
	queries []int32
	mask    []uint32 // [token][words], nil when every query sees every token
}

// NewPlan validates the tree and schedules it for cfg. The tree's slots must
// be assigned; NumSlots of the pool is checked when the plan runs.
func NewPlan(t *Tree, cfg Config) (*Plan, error) {
	if err := cfg.Shape.Validate(); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if t == nil {
		return nil, fmt.Errorf("plan: nil tree")
	}
	if !t.SlotsAssigned() {
		return nil, fmt.Errorf("plan: tree has nodes without slots (assign them first)")
	}
	if err := t.Validate(t.NumSlots()); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if cfg.Scale == 0 {
		cfg.Scale = cfg.Shape.DefaultScale()
	}
	if math.IsNaN(cfg.Scale) || math.IsInf(cfg.Scale, 0) || cfg.Scale <= 0 || cfg.Scale > math.MaxFloat32 {
		return nil, fmt.Errorf("plan: scale %v must be positive and within float32 range", cfg.Scale)
	}
	if cfg.KV != KVF16 && cfg.KV != KVF32 {
		return nil, fmt.Errorf("plan: unknown KV type %d", cfg.KV)
	}
	tiles, err := ChooseTiles(cfg.Shape, cfg.Limits)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if cfg.Tiles != (Tiles{}) {
		if err := cfg.Tiles.check(cfg.Shape, cfg.Limits); err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
		tiles = cfg.Tiles
	}
	if cfg.BlockTokens < 0 {
		return nil, fmt.Errorf("plan: block size %d is negative", cfg.BlockTokens)
	}
	total := t.TotalTokens()
	if cfg.BlockTokens == 0 {
		cfg.BlockTokens = autoBlock(cfg.Method, total, tiles.Tokens, ceilDiv(len(t.Queries)*cfg.Shape.GroupSize(), tiles.Rows))
	}
	v := newVisibility(t)
	var items []work
	switch cfg.Method {
	case MethodFlatten:
		items = v.blocks(cfg.BlockTokens, false)
	case MethodDenseMask:
		items = v.blocks(cfg.BlockTokens, true)
	case MethodNode:
		items = v.nodes(0)
	case MethodNodeChunk:
		items = v.nodes(cfg.BlockTokens)
	case MethodFlashDecoding:
		items = v.perQuery(cfg.BlockTokens)
	default:
		return nil, fmt.Errorf("plan: unknown method %q", cfg.Method)
	}
	if cfg.MaxPasses <= 0 || cfg.MaxPasses > MaxTilePasses {
		cfg.MaxPasses = MaxTilePasses
	}
	items = boundItems(items, tiles, cfg.Shape.GroupSize(), cfg.MaxPasses, cfg.Method == MethodDenseMask, cfg.Method == MethodFlatten)
	p := &Plan{Config: cfg, Tiles: tiles, NumQueries: len(t.Queries), NumSlots: t.NumSlots()}
	if err := p.encode(items); err != nil {
		return nil, err
	}
	p.IO.UniqueTokens = total
	p.IO.PathTokens = t.SumPathLengths()
	kvRow := int64(cfg.Shape.KVHeads * cfg.Shape.HeadDim * cfg.KV.Bytes() * 2)
	p.IO.KVUniqueBytes = int64(total) * kvRow
	p.IO.QueryBytes = int64(p.NumQueries*cfg.Shape.QHeads*cfg.Shape.HeadDim) * 4
	p.IO.OutputBytes = p.IO.QueryBytes
	return p, nil
}

// autoBlock sizes blocks so that a tree yields enough work items to fill a
// GPU while keeping each item several shared-memory tiles long. Flatten
// blocks start at 12 tiles (384 tokens at 32-token tiles: on the H100 that
// beat 96, 192 and 768 on all four target trees, because every workgroup
// pays a few global-memory round trips before its first tile) and halve
// while the tree would give fewer than 64 items; rowTiles is the row tiles
// of all queries, the query slices of a block every query sees.
func autoBlock(m Method, total, tile, rowTiles int) int {
	switch m {
	case MethodFlatten, MethodDenseMask:
		b := 12 * tile
		for b > tile && ceilDiv(total, b)*rowTiles < 64 {
			b = max(tile, ceilDiv(b/2, tile)*tile)
		}
		return b
	default:
		return 8 * tile
	}
}

// visibility answers which queries see which tokens.
type visibility struct {
	t      *Tree
	seeing [][]int32 // per node: queries whose node is in its subtree, ascending
	dfs    []int     // nodes in depth-first order
}

func newVisibility(t *Tree) *visibility {
	v := &visibility{t: t, seeing: make([][]int32, len(t.Nodes))}
	for qi, q := range t.Queries {
		for n := q.Node; n >= 0; n = t.Nodes[n].Parent {
			v.seeing[n] = append(v.seeing[n], int32(qi))
		}
	}
	children := t.Children()
	stack := []int{0}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		v.dfs = append(v.dfs, n)
		for i := len(children[n]) - 1; i >= 0; i-- {
			stack = append(stack, children[n][i])
		}
	}
	return v
}

// sees reports whether query qi sees token off of node n, given qi sees node n at all.
func (v *visibility) sees(qi int32, n, off int) bool {
	q := v.t.Queries[qi]
	return q.Node != n || off <= q.Offset
}

type segment struct{ node, from, to int }

// item builds a work item over segments of nodes with the given queries (all
// of them when queries is nil), adding a mask when some pair is invisible.
func (v *visibility) item(segs []segment, queries []int32) work {
	var w work
	if queries == nil {
		set := map[int32]bool{}
		for _, s := range segs {
			for _, q := range v.seeing[s.node] {
				set[q] = true
			}
		}
		for q := range set {
			queries = append(queries, q)
		}
		slices.Sort(queries)
	}
	w.queries = queries
	for _, s := range segs {
		w.slots = append(w.slots, v.t.Nodes[s.node].Slots[s.from:s.to]...)
	}
	words := (len(queries) + 31) / 32
	mask := make([]uint32, len(w.slots)*words)
	full := true
	tok := 0
	for _, s := range segs {
		seeing := v.seeing[s.node]
		for off := s.from; off < s.to; off++ {
			j := 0 // seeing and queries are both ascending: merge
			for qi, q := range queries {
				for j < len(seeing) && seeing[j] < q {
					j++
				}
				if j < len(seeing) && seeing[j] == q && v.sees(q, s.node, off) {
					mask[tok*words+qi/32] |= 1 << (qi % 32)
				} else {
					full = false
				}
			}
			tok++
		}
	}
	if !full {
		w.mask = mask
	}
	return w
}

// blocks cuts the depth-first token order into blocks of size tokens.
func (v *visibility) blocks(size int, allQueries bool) []work {
	var all []int32
	if allQueries {
		all = make([]int32, len(v.t.Queries))
		for i := range all {
			all[i] = int32(i)
		}
	}
	var items []work
	var segs []segment
	used := 0
	flush := func() {
		if len(segs) == 0 {
			return
		}
		w := v.item(segs, all)
		if len(w.queries) > 0 {
			items = append(items, w)
		}
		segs, used = nil, 0
	}
	for _, n := range v.dfs {
		tokens := v.t.Nodes[n].Tokens
		for from := 0; from < tokens; {
			take := min(tokens-from, size-used)
			segs = append(segs, segment{n, from, from + take})
			used += take
			from += take
			if used == size {
				flush()
			}
		}
	}
	flush()
	return items
}

// nodes makes one item per node, or per chunk of at most chunk tokens.
func (v *visibility) nodes(chunk int) []work {
	var items []work
	for _, n := range v.dfs {
		if len(v.seeing[n]) == 0 {
			continue // no query reads this node
		}
		tokens := v.t.Nodes[n].Tokens
		step := tokens
		if chunk > 0 {
			step = chunk
		}
		for from := 0; from < tokens; from += step {
			w := v.item([]segment{{n, from, min(from+step, tokens)}}, nil)
			if len(w.queries) > 0 {
				items = append(items, w)
			}
		}
	}
	return items
}

// perQuery splits each query's own path into chunks: no sharing, no mask.
func (v *visibility) perQuery(chunk int) []work {
	var items []work
	for qi := range v.t.Queries {
		path := v.t.QuerySlots(qi)
		for from := 0; from < len(path); from += chunk {
			items = append(items, work{slots: path[from:min(from+chunk, len(path))], queries: []int32{int32(qi)}})
		}
	}
	return items
}

// MaxTilePasses bounds the shared-memory passes (row tiles x token tiles) of
// one workgroup. Unbounded loops make long workgroups that unbalance the GPU,
// and Mesa's lavapipe (22.3) computes wrong results once a workgroup has run
// about 500 barriers (four per pass, two more per row tile), so longer
// items are cut into token chunks. Every (query, token) pair stays in
// exactly one item.
const MaxTilePasses = 48

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// boundItems cuts items into query slices of one row tile each (a group
// larger than the row tile takes several) and token chunks of at most
// maxPasses passes. Slices run as separate workgroups: a 200-row few-shot
// prompt block becomes seven workgroups that fill the GPU, each keeping its
// K/V tile in shared memory for its rows while the others read it from L2.
// With compact (flatten), slices drop the tokens none of their queries
// sees. Dense items keep every query and token, seen or not: that is the
// dense-mask baseline.
func boundItems(items []work, tiles Tiles, group, maxPasses int, dense, compact bool) []work {
	slice := max(1, tiles.Rows/group)
	rowTiles := ceilDiv(slice*group, tiles.Rows)
	chunk := max(1, maxPasses/rowTiles) * tiles.Tokens
	var out []work
	for _, w := range items {
		tokens := len(w.slots)
		for from := 0; from < tokens; from += chunk {
			part := w.sub(from, min(from+chunk, tokens), 0, len(w.queries), dense)
			for q := 0; q < len(part.queries); q += slice {
				s := part.sub(0, len(part.slots), q, min(q+slice, len(part.queries)), dense)
				if len(s.queries) == 0 {
					continue
				}
				if compact {
					if s = s.dropUnseen(); len(s.slots) == 0 {
						continue
					}
				}
				out = append(out, s)
			}
		}
	}
	return out
}

// dropUnseen removes the tokens no query of w sees: a query slice of a
// flatten block that straddles branches (or a speculative tree's one-token
// leaves) keeps only its own tokens instead of the whole block's.
func (w work) dropUnseen() work {
	if w.mask == nil {
		return w
	}
	words := ceilDiv(len(w.queries), 32)
	var keep []int
	for t := range w.slots {
		for _, m := range w.mask[t*words : (t+1)*words] {
			if m != 0 {
				keep = append(keep, t)
				break
			}
		}
	}
	if len(keep) == len(w.slots) {
		return w
	}
	out := work{queries: w.queries, slots: make([]int32, len(keep)), mask: make([]uint32, len(keep)*words)}
	full := true
	for i, t := range keep {
		out.slots[i] = w.slots[t]
		copy(out.mask[i*words:(i+1)*words], w.mask[t*words:(t+1)*words])
		for q := range w.queries {
			if w.mask[t*words+q/32]>>(q%32)&1 == 0 {
				full = false
			}
		}
	}
	if full {
		out.mask = nil
	}
	return out
}

// sub returns tokens [t0, t1) and queries [q0, q1) of w, dropping queries
// that see none of those tokens (unless dense) and the mask when every pair
// is visible.
func (w work) sub(t0, t1, q0, q1 int, dense bool) work {
	if t0 == 0 && t1 == len(w.slots) && q0 == 0 && q1 == len(w.queries) {
		return w
	}
	words := ceilDiv(len(w.queries), 32)
	visible := func(t, q int) bool {
		return w.mask == nil || w.mask[t*words+q/32]>>(q%32)&1 != 0
	}
	var keep []int
	for q := q0; q < q1; q++ {
		for t := t0; t < t1; t++ {
			if dense || visible(t, q) {
				keep = append(keep, q)
				break
			}
		}
	}
	out := work{slots: w.slots[t0:t1]}
	for _, q := range keep {
		out.queries = append(out.queries, w.queries[q])
	}
	if w.mask == nil {
		return out
	}
	nw := ceilDiv(len(keep), 32)
	mask := make([]uint32, (t1-t0)*nw)
	full := true
	for t := t0; t < t1; t++ {
		for i, q := range keep {
			if visible(t, q) {
				mask[(t-t0)*nw+i/32] |= 1 << (i % 32)
			} else {
				full = false
			}
		}
	}
	if !full {
		out.mask = mask
	}
	return out
}

const itemWords = kernels.ItemRecordWords

// encode lays the items out in one metadata buffer: item table, slot lists,
// query lists, masks, then the reduction's inverse index.
func (p *Plan) encode(items []work) error {
	if len(items) == 0 {
		return fmt.Errorf("plan: the tree gives no work")
	}
	s := p.Shape
	meta := make([]uint32, len(items)*itemWords)
	perQuery := make([][]uint32, p.NumQueries)
	partials := 0
	for i, w := range items {
		rec := kernels.ItemRecord{SlotsOff: uint32(len(meta)), NumSlots: uint32(len(w.slots)), PartialBase: uint32(partials)}
		for _, sl := range w.slots {
			meta = append(meta, uint32(sl))
		}
		rec.QueriesOff, rec.NumQueries = uint32(len(meta)), uint32(len(w.queries))
		for qi, q := range w.queries {
			meta = append(meta, uint32(q))
			perQuery[q] = append(perQuery[q], uint32(partials+qi))
		}
		if w.mask != nil {
			rec.MaskOff, rec.MaskWords = uint32(len(meta)), uint32((len(w.queries)+31)/32)
			meta = append(meta, w.mask...)
		}
		putItem(meta[i*itemWords:(i+1)*itemWords], rec)
		partials += len(w.queries)

		tokens := int64(len(w.slots))
		rows := len(w.queries) * s.GroupSize()
		rowTiles := int64((rows + p.Tiles.Rows - 1) / p.Tiles.Rows)
		p.IO.KVBytes += tokens * int64(s.KVHeads*s.HeadDim*p.KV.Bytes()*2) * rowTiles
		p.IO.MaskBytes += int64(len(w.mask)) * 4 * int64(s.KVHeads) * rowTiles
		p.IO.MaskedPairs += tokens * int64(len(w.queries))
	}
	p.offsetsOff = uint32(len(meta))
	offset := uint32(0)
	for _, l := range perQuery {
		meta = append(meta, offset)
		offset += uint32(len(l))
	}
	meta = append(meta, offset)
	p.listOff = uint32(len(meta))
	for q, l := range perQuery {
		if len(l) == 0 {
			return fmt.Errorf("plan: query %d sees no token (internal error)", q)
		}
		meta = append(meta, l...)
	}
	if len(meta) > math.MaxUint32/2 {
		return fmt.Errorf("plan: metadata of %d words is too large", len(meta))
	}
	p.meta = meta
	p.Items = len(items)
	p.Partials = partials
	p.IO.Items = len(items)
	p.IO.Partials = partials
	partialBytes := int64(partials*s.QHeads) * int64(s.HeadDim+1) * 4
	p.IO.PartialWrite = partialBytes
	p.IO.PartialRead = partialBytes
	p.IO.MetadataBytes = int64(len(meta)) * 4
	return nil
}

// putItem writes rec into its itemWords words of the metadata.
func putItem(dst []uint32, rec kernels.ItemRecord) {
	dst[0], dst[1], dst[2], dst[3] = rec.SlotsOff, rec.NumSlots, rec.QueriesOff, rec.NumQueries
	dst[4], dst[5], dst[6], dst[7] = rec.MaskOff, rec.MaskWords, rec.PartialBase, rec.Reserved
}

// item reads item i's record back from the metadata.
func (p *Plan) item(i int) kernels.ItemRecord {
	w := p.meta[i*itemWords : (i+1)*itemWords]
	return kernels.ItemRecord{SlotsOff: w[0], NumSlots: w[1], QueriesOff: w[2], NumQueries: w[3],
		MaskOff: w[4], MaskWords: w[5], PartialBase: w[6], Reserved: w[7]}
}

// Meta returns the plan's metadata words (for inspection and tests).
func (p *Plan) Meta() []uint32 { return p.meta }

// Coverage calls f for every (query, slot) pair the plan computes as
// visible, once per time it is computed; tests use it to prove that every
// path token is covered exactly once and nothing else is.
func (p *Plan) Coverage(f func(query int, slot int32)) {
	for i := 0; i < p.Items; i++ {
		rec := p.item(i)
		slots := p.meta[rec.SlotsOff : rec.SlotsOff+rec.NumSlots]
		queries := p.meta[rec.QueriesOff : rec.QueriesOff+rec.NumQueries]
		for t, sl := range slots {
			for qi, q := range queries {
				if rec.MaskWords != 0 {
					word := p.meta[rec.MaskOff+uint32(t)*rec.MaskWords+uint32(qi/32)]
					if word>>(qi%32)&1 == 0 {
						continue
					}
				}
				f(int(q), int32(sl))
			}
		}
	}
}

// ItemTokens returns each work item's token count (tests check balance).
func (p *Plan) ItemTokens() []int {
	out := make([]int, p.Items)
	for i := range out {
		out[i] = int(p.item(i).NumSlots)
	}
	return out
}

package treeattn

// The planner as it was before the Planner rewrite (commit 009f51b), kept
// as the reference that the fast planner must reproduce word for word: the
// same items in the same order give bit-identical attention outputs.

import (
	"fmt"
	"math"
	"slices"

	"github.com/deft-vk/deft/kernels"
)

// work is one work item under construction.
type work struct {
	slots   []int32
	queries []int32
	mask    []uint32 // [token][words], nil when every query sees every token
}

// legacyNewPlan validates the tree and schedules it for cfg. The tree's slots must
// be assigned; NumSlots of the pool is checked when the plan runs.
func legacyNewPlan(t *Tree, cfg Config) (*Plan, error) {
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
	tiles, err := scalarTiles(cfg, len(t.Queries))
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
	if err := p.legacyEncode(items); err != nil {
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

type legacySeg struct{ node, from, to int }

// item builds a work item over segments of nodes with the given queries (all
// of them when queries is nil), adding a mask when some pair is invisible.
func (v *visibility) item(segs []legacySeg, queries []int32) work {
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
	var segs []legacySeg
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
			segs = append(segs, legacySeg{n, from, from + take})
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
			w := v.item([]legacySeg{{n, from, min(from+step, tokens)}}, nil)
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

// encode lays the items out in one metadata buffer: item table, slot lists,
// query lists, masks, then the reduction's inverse index.
func (p *Plan) legacyEncode(items []work) error {
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

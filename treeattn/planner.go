package treeattn

import (
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/deft-vk/deft/kernels"
)

// Planner makes plans, keeping its working memory between calls: planning
// works on runs of tokens (node segments) rather than on single tokens
// where it can, and a steady stream of decoding steps allocates nothing
// once its buffers have grown. A Planner is not safe for concurrent use.
type Planner struct {
	plan Plan

	// The tree as the planner sees it.
	childStart, childList []int32 // children CSR, increasing index order
	dfs                   []int32 // nodes in depth-first (pre-)order
	tin, tout             []int32 // dfs interval of each node's subtree
	anc                   []int64 // tokens of each node's strict ancestors
	queryByTin            []int32 // queries sorted by their node's tin
	dupBits               []uint64

	// Work in progress.
	segs, chunkSegs   []segment
	q0, partQ, sliceQ []int32
	stamp             []uint32
	stampGen          uint32
	words             []uint32 // per-token mask word of the item being emitted
	data              []uint32 // slot, query and mask lists
	recs              []kernels.ItemRecord
	counts            []uint32
}

// segment is tokens [from, to) of a node.
type segment struct{ node, from, to int32 }

// NewPlan validates the tree and schedules it for cfg with a fresh
// Planner (use a Planner to plan step after step without allocating).
func NewPlan(t *Tree, cfg Config) (*Plan, error) {
	var pl Planner
	return pl.Plan(t, cfg)
}

// Plan validates the tree and schedules it for cfg. The tree's slots must
// be assigned; the pool's size is checked when the plan runs. The plan and
// its metadata belong to the Planner and stay valid until its next Plan
// call; upload (or copy) it before planning the next step.
func (pl *Planner) Plan(t *Tree, cfg Config) (*Plan, error) {
	if err := cfg.Shape.Validate(); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if t == nil {
		return nil, fmt.Errorf("plan: nil tree")
	}
	if !t.SlotsAssigned() {
		return nil, fmt.Errorf("plan: tree has nodes without slots (assign them first)")
	}
	numSlots, err := t.validateSlots(&pl.dupBits)
	if err != nil {
		return nil, fmt.Errorf("plan: validate tree: %w", err)
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
	group := cfg.Shape.GroupSize()
	if cfg.BlockTokens == 0 {
		cfg.BlockTokens = autoBlock(cfg.Method, total, tiles.Tokens, ceilDiv(len(t.Queries)*group, tiles.Rows))
	}
	if cfg.MaxPasses <= 0 || cfg.MaxPasses > MaxTilePasses {
		cfg.MaxPasses = MaxTilePasses
	}
	p := &pl.plan
	meta := p.meta[:0]
	*p = Plan{Config: cfg, Tiles: tiles, NumQueries: len(t.Queries), NumSlots: numSlots}
	p.meta = meta
	pl.index(t)
	pl.data, pl.recs = pl.data[:0], pl.recs[:0]

	// Query slices of one row tile, and token chunks of at most MaxPasses
	// shared-memory passes (see MaxTilePasses).
	slice := max(1, tiles.Rows/group)
	chunk := max(1, cfg.MaxPasses/ceilDiv(slice*group, tiles.Rows)) * tiles.Tokens
	dense := cfg.Method == MethodDenseMask
	compact := cfg.Method == MethodFlatten
	emit := func(segs []segment, q0 []int32) {
		pl.bound(t, segs, q0, slice, chunk, dense, compact)
	}
	switch cfg.Method {
	case MethodFlatten, MethodDenseMask:
		pl.blocks(t, cfg.BlockTokens, dense, emit)
	case MethodNode:
		pl.nodes(t, 0, emit)
	case MethodNodeChunk:
		pl.nodes(t, cfg.BlockTokens, emit)
	case MethodFlashDecoding:
		pl.perQuery(t, cfg.BlockTokens, emit)
	default:
		return nil, fmt.Errorf("plan: unknown method %q", cfg.Method)
	}
	if err := pl.encode(p); err != nil {
		return nil, err
	}
	p.IO.UniqueTokens = total
	for _, q := range t.Queries {
		p.IO.PathTokens += int(pl.anc[q.Node]) + q.Offset + 1
	}
	kvRow := int64(cfg.Shape.KVHeads * cfg.Shape.HeadDim * cfg.KV.Bytes() * 2)
	p.IO.KVUniqueBytes = int64(total) * kvRow
	p.IO.QueryBytes = int64(p.NumQueries*cfg.Shape.QHeads*cfg.Shape.HeadDim) * 4
	p.IO.OutputBytes = p.IO.QueryBytes
	return p, nil
}

// grow returns s with length n, reusing its array when large enough.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n, n+n/4)
	}
	return s[:n]
}

// index builds the children lists, the depth-first order with each
// subtree's interval, and the queries ordered by that interval, so that
// "query q's path contains node n" is tin[n] <= tin[q.Node] < tout[n].
func (pl *Planner) index(t *Tree) {
	n := len(t.Nodes)
	pl.childStart = grow(pl.childStart, n+1)
	clear(pl.childStart)
	for i := 1; i < n; i++ {
		pl.childStart[t.Nodes[i].Parent+1]++
	}
	for i := 0; i < n; i++ {
		pl.childStart[i+1] += pl.childStart[i]
	}
	pl.childList = grow(pl.childList, max(0, n-1))
	fill := grow(pl.tout, n) // borrowed as the fill cursor
	copy(fill, pl.childStart[:n])
	for i := 1; i < n; i++ {
		p := t.Nodes[i].Parent
		pl.childList[fill[p]] = int32(i)
		fill[p]++
	}
	pl.tout = fill
	pl.dfs = grow(pl.dfs, n)[:0]
	pl.tin = grow(pl.tin, n)
	stack := pl.sliceQ[:0] // borrowed; refilled later
	stack = append(stack, 0)
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		pl.tin[v] = int32(len(pl.dfs))
		pl.dfs = append(pl.dfs, v)
		for c := pl.childStart[v+1] - 1; c >= pl.childStart[v]; c-- {
			stack = append(stack, pl.childList[c])
		}
	}
	pl.sliceQ = stack[:0]
	// Subtree ends: a node's subtree is the dfs run up to the next node
	// that is not its descendant; sizes summed bottom-up (children have
	// larger indices than parents).
	size := pl.tout
	for i := range size {
		size[i] = 1
	}
	for i := n - 1; i > 0; i-- {
		size[t.Nodes[i].Parent] += size[i]
	}
	for i := range pl.tout {
		pl.tout[i] = pl.tin[i] + size[i]
	}
	pl.anc = grow(pl.anc, n)
	pl.anc[0] = 0
	for i := 1; i < n; i++ {
		p := t.Nodes[i].Parent
		pl.anc[i] = pl.anc[p] + int64(t.Nodes[p].Tokens)
	}
	nq := len(t.Queries)
	pl.queryByTin = grow(pl.queryByTin, nq)
	for i := range pl.queryByTin {
		pl.queryByTin[i] = int32(i)
	}
	slices.SortStableFunc(pl.queryByTin, func(a, b int32) int {
		return int(pl.tin[t.Queries[a].Node]) - int(pl.tin[t.Queries[b].Node])
	})
	pl.stamp = grow(pl.stamp, nq)
	if pl.stampGen == 0 || pl.stampGen > math.MaxUint32/2 {
		clear(pl.stamp)
		pl.stampGen = 1
	}
}

// contains reports whether node n is on the path of a query at node qn.
func (pl *Planner) contains(n, qn int32) bool {
	return pl.tin[n] <= pl.tin[qn] && pl.tin[qn] < pl.tout[n]
}

// seesAny reports whether query q sees some token of segs.
func (pl *Planner) seesAny(t *Tree, q int32, segs []segment) bool {
	qu := t.Queries[q]
	qn := int32(qu.Node)
	for _, s := range segs {
		if pl.contains(s.node, qn) && (qn != s.node || int32(qu.Offset) >= s.from) {
			return true
		}
	}
	return false
}

// seeing appends, in increasing order, the queries whose paths contain a
// node of segs (whether or not they see the segment's tokens).
func (pl *Planner) seeing(t *Tree, segs []segment, dst []int32) []int32 {
	pl.stampGen++
	gen := pl.stampGen
	start := len(dst)
	for _, s := range segs {
		lo, hi := pl.tin[s.node], pl.tout[s.node]
		i, _ := slices.BinarySearchFunc(pl.queryByTin, lo, func(q int32, v int32) int {
			return int(pl.tin[t.Queries[q].Node]) - int(v)
		})
		for ; i < len(pl.queryByTin); i++ {
			q := pl.queryByTin[i]
			if pl.tin[t.Queries[q].Node] >= hi {
				break
			}
			if pl.stamp[q] != gen {
				pl.stamp[q] = gen
				dst = append(dst, q)
			}
		}
	}
	slices.Sort(dst[start:])
	return dst
}

// blocks cuts the depth-first token order into blocks of size tokens: the
// items of flatten (the queries that see each block) and densemask (all
// queries).
func (pl *Planner) blocks(t *Tree, size int, all bool, emit func([]segment, []int32)) {
	segs := pl.segs[:0]
	used := 0
	flush := func() {
		if len(segs) == 0 {
			return
		}
		q0 := pl.q0[:0]
		if all {
			for i := range t.Queries {
				q0 = append(q0, int32(i))
			}
		} else {
			q0 = pl.seeing(t, segs, q0)
		}
		pl.q0 = q0
		if len(q0) > 0 {
			emit(segs, q0)
		}
		segs, used = segs[:0], 0
	}
	for _, n := range pl.dfs {
		tokens := t.Nodes[n].Tokens
		for from := 0; from < tokens; {
			take := min(tokens-from, size-used)
			segs = append(segs, segment{n, int32(from), int32(from + take)})
			used += take
			from += take
			if used == size {
				flush()
			}
		}
	}
	flush()
	pl.segs = segs
}

// nodes makes one item per node read by some query, or per chunk of at most
// chunk tokens (DeFT-Node, DeFT-Node-Chunk).
func (pl *Planner) nodes(t *Tree, chunk int, emit func([]segment, []int32)) {
	for _, n := range pl.dfs {
		seg := append(pl.segs[:0], segment{n, 0, int32(t.Nodes[n].Tokens)})
		pl.segs = seg
		q0 := pl.seeing(t, seg, pl.q0[:0])
		pl.q0 = q0
		if len(q0) == 0 {
			continue // no query reads this node
		}
		tokens := t.Nodes[n].Tokens
		step := tokens
		if chunk > 0 {
			step = chunk
		}
		for from := 0; from < tokens; from += step {
			seg[0] = segment{n, int32(from), int32(min(from+step, tokens))}
			emit(seg, q0)
		}
	}
}

// perQuery splits each query's own path into chunks (Flash-Decoding).
func (pl *Planner) perQuery(t *Tree, chunk int, emit func([]segment, []int32)) {
	for qi, q := range t.Queries {
		path := pl.chunkSegs[:0]
		for n := q.Node; n >= 0; n = t.Nodes[n].Parent {
			to := t.Nodes[n].Tokens
			if n == q.Node {
				to = q.Offset + 1
			}
			path = append(path, segment{int32(n), 0, int32(to)})
		}
		slices.Reverse(path)
		pl.chunkSegs = path
		q0 := append(pl.q0[:0], int32(qi))
		pl.q0 = q0
		segs := pl.segs[:0]
		used := 0
		for _, s := range path {
			for from := s.from; from < s.to; {
				take := min(s.to-from, int32(chunk-used))
				segs = append(segs, segment{s.node, from, from + take})
				used += int(take)
				from += take
				if used == chunk {
					emit(segs, q0)
					segs, used = segs[:0], 0
				}
			}
		}
		if len(segs) > 0 {
			emit(segs, q0)
		}
		pl.segs = segs
	}
}

// bound cuts a method's item (segments segs seen by queries q0, ascending)
// into token chunks of at most chunk tokens and query slices of at most
// slice queries, each a work item. A chunk keeps the queries that see one
// of its tokens, unless it is the whole item; a slice keeps those of its
// queries that see one of the chunk's tokens, unless it is the whole chunk;
// dense (densemask) keeps every query. compact (flatten) drops the tokens
// none of a slice's queries sees.
func (pl *Planner) bound(t *Tree, segs []segment, q0 []int32, slice, chunk int, dense, compact bool) {
	n := 0
	for _, s := range segs {
		n += int(s.to - s.from)
	}
	for from := 0; from < n; from += chunk {
		to := min(from+chunk, n)
		// The chunk's segments.
		cs := pl.chunkSegs[:0]
		pos := 0
		for _, s := range segs {
			l := int(s.to - s.from)
			a, b := max(from, pos), min(to, pos+l)
			if a < b {
				cs = append(cs, segment{s.node, s.from + int32(a-pos), s.from + int32(b-pos)})
			}
			pos += l
		}
		pl.chunkSegs = cs
		partQ := q0
		if from != 0 || to != n {
			partQ = pl.partQ[:0]
			for _, q := range q0 {
				if dense || pl.seesAny(t, q, cs) {
					partQ = append(partQ, q)
				}
			}
			pl.partQ = partQ
		}
		for qs := 0; qs < len(partQ); qs += slice {
			qe := min(qs+slice, len(partQ))
			sq := partQ[qs:qe]
			if qs != 0 || qe != len(partQ) {
				kept := pl.sliceQ[:0]
				for _, q := range sq {
					if dense || pl.seesAny(t, q, cs) {
						kept = append(kept, q)
					}
				}
				pl.sliceQ = kept
				sq = kept
			}
			if len(sq) > 0 {
				pl.item(t, cs, sq, compact)
			}
		}
	}
}

// item appends one work item: tokens of segs (without those no query sees,
// when compact) and queries qs (at most 32: one mask word per token), with
// a mask unless every query sees every token.
func (pl *Planner) item(t *Tree, segs []segment, qs []int32, compact bool) {
	full := uint32(1)<<len(qs) - 1
	if len(qs) == 32 {
		full = ^uint32(0)
	}
	tokens := 0
	for _, s := range segs {
		tokens += int(s.to - s.from)
	}
	words := grow(pl.words, tokens)
	pl.words = words
	allFull, kept := true, 0
	pos := 0
	for _, s := range segs {
		// Queries below the node see the whole segment; queries at the
		// node see its tokens up to their offset, so tokens up to the
		// smallest such offset share one word.
		var base, own uint32
		minOwn := int32(math.MaxInt32)
		for i, q := range qs {
			qu := t.Queries[q]
			qn := int32(qu.Node)
			if qn == s.node {
				own |= 1 << i
				minOwn = min(minOwn, int32(qu.Offset))
			} else if pl.contains(s.node, qn) {
				base |= 1 << i
			}
		}
		uniformTo := s.to
		if own != 0 {
			uniformTo = max(s.from, min(s.to, minOwn+1))
		}
		if n := int(uniformTo - s.from); n > 0 {
			w := base | own
			fill := words[pos : pos+n]
			for i := range fill {
				fill[i] = w
			}
			pos += n
			if w != full {
				allFull = false
			}
			if w != 0 {
				kept += n
			}
		}
		for off := uniformTo; off < s.to; off++ {
			w := base
			for i, q := range qs {
				qu := t.Queries[q]
				if int32(qu.Node) == s.node && off <= int32(qu.Offset) {
					w |= 1 << i
				}
			}
			words[pos] = w
			pos++
			if w != full {
				allFull = false
			}
			if w != 0 {
				kept++
			}
		}
	}
	if !compact || allFull {
		kept = tokens
	}
	if kept == 0 {
		return
	}
	rec := kernels.ItemRecord{SlotsOff: uint32(len(pl.data)), NumSlots: uint32(kept), PartialBase: 0}
	pos = 0
	for _, s := range segs {
		slots := t.Nodes[s.node].Slots[s.from:s.to]
		if kept == tokens {
			pl.data = append(pl.data, asUint32(slots)...)
			continue
		}
		for i, sl := range slots {
			if words[pos+i] != 0 {
				pl.data = append(pl.data, uint32(sl))
			}
		}
		pos += len(slots)
	}
	rec.QueriesOff, rec.NumQueries = uint32(len(pl.data)), uint32(len(qs))
	for _, q := range qs {
		pl.data = append(pl.data, uint32(q))
	}
	// After dropping unseen tokens the mask may have become full.
	if kept != tokens {
		allFull = true
		for _, w := range words[:tokens] {
			if w != 0 && w != full {
				allFull = false
				break
			}
		}
	}
	if !allFull {
		rec.MaskOff, rec.MaskWords = uint32(len(pl.data)), 1
		for _, w := range words[:tokens] {
			if kept == tokens || w != 0 {
				pl.data = append(pl.data, w)
			}
		}
	}
	pl.recs = append(pl.recs, rec)
}

// asUint32 views validated (non-negative) slots as metadata words.
func asUint32(s []int32) []uint32 {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&s[0])), len(s))
}

// encode lays the items out in the plan's metadata buffer: item table,
// slot, query and mask lists, then the reduction's inverse index.
func (pl *Planner) encode(p *Plan) error {
	items := len(pl.recs)
	if items == 0 {
		return fmt.Errorf("plan: the tree gives no work")
	}
	s := p.Shape
	table := uint32(items * itemWords)
	counts := grow(pl.counts, p.NumQueries+1)
	clear(counts)
	partials := 0
	for i := range pl.recs {
		rec := &pl.recs[i]
		rec.SlotsOff += table
		rec.QueriesOff += table
		if rec.MaskWords != 0 {
			rec.MaskOff += table
		}
		rec.PartialBase = uint32(partials)
		partials += int(rec.NumQueries)
		for _, q := range pl.data[rec.QueriesOff-table : rec.QueriesOff-table+rec.NumQueries] {
			counts[q+1]++
		}
		tokens := int64(rec.NumSlots)
		rowTiles := int64(ceilDiv(int(rec.NumQueries)*s.GroupSize(), p.Tiles.Rows))
		p.IO.KVBytes += tokens * int64(s.KVHeads*s.HeadDim*p.KV.Bytes()*2) * rowTiles
		p.IO.MaskBytes += int64(rec.MaskWords) * tokens * 4 * int64(s.KVHeads) * rowTiles
		p.IO.MaskedPairs += tokens * int64(rec.NumQueries)
	}
	size := int(table) + len(pl.data) + p.NumQueries + 1 + partials
	if size > math.MaxUint32/2 {
		return fmt.Errorf("plan: metadata of %d words is too large", size)
	}
	meta := grow(p.meta, size)
	for i, rec := range pl.recs {
		putItem(meta[i*itemWords:(i+1)*itemWords], rec)
	}
	copy(meta[table:], pl.data)
	p.offsetsOff = table + uint32(len(pl.data))
	offsets := meta[p.offsetsOff : int(p.offsetsOff)+p.NumQueries+1]
	for q := 0; q < p.NumQueries; q++ {
		if counts[q+1] == 0 {
			return fmt.Errorf("plan: query %d sees no token (internal error)", q)
		}
		counts[q+1] += counts[q]
	}
	copy(offsets, counts)
	p.listOff = p.offsetsOff + uint32(p.NumQueries+1)
	list := meta[p.listOff:]
	for _, rec := range pl.recs {
		qs := meta[rec.QueriesOff : rec.QueriesOff+rec.NumQueries]
		for i, q := range qs {
			list[counts[q]] = rec.PartialBase + uint32(i)
			counts[q]++
		}
	}
	pl.counts = counts
	p.meta = meta
	p.Items = items
	p.Partials = partials
	p.IO.Items = items
	p.IO.Partials = partials
	partialBytes := int64(partials*s.QHeads) * int64(s.HeadDim+1) * 4
	p.IO.PartialWrite = partialBytes
	p.IO.PartialRead = partialBytes
	p.IO.MetadataBytes = int64(len(meta)) * 4
	return nil
}

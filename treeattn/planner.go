package treeattn

import (
	"fmt"
	"math"
	"math/bits"
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
	qAt                   []int32 // per tin value, the first position in queryByTin at or after it
	inOrder               bool    // queries are in depth-first order: queryByTin[i] == i
	dupBits               []uint64

	// Work in progress.
	segs, chunkSegs   []segment
	q0, partQ, sliceQ []int32 // queries; positions in q0 (partQ, sliceQ)
	allPos, pos       []int32 // 0..len(q0)-1; each query's last position in a q0
	bits              []uint64
	sees              []bool // per position in q0: sees a token of the chunk
	nSees             int    // how many do
	chunkSlots        int    // data offset of the current chunk's whole slot list, -1 before it is written
	stamp             []uint32
	stampGen          uint32
	runs              []run      // token runs of the item being emitted
	pairs             [][2]int32 // (position in q0, segment) seen
	segStart, segList []int32    // each position's segments (CSR)
	segFill, visit    []int32
	segStamp          []uint32
	segGen            uint32
	data              []uint32 // slot, query and mask lists
	recs, recsTmp     []kernels.ItemRecord
	classOf           []int // item class -> class that runs it
	classCount        []int
	counts            []uint32

	// Incremental planning (planner_next.go).
	prev        prevStep
	units       []unit
	reusing     bool // units may be copied from prev
	reused      int
	firstChange int
	tokStart    []int
	dirty       []bool
	grownPath   []bool
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
	return pl.planStep(t, cfg, false)
}

// planStep is Plan, and PlanNext when appended.
func (pl *Planner) planStep(t *Tree, cfg Config, appended bool) (*Plan, error) {
	itemsOK := pl.prev.items
	pl.prev.items, pl.reusing, pl.reused = false, false, 0
	if err := cfg.Shape.Validate(); err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if t == nil {
		return nil, fmt.Errorf("plan: nil tree")
	}
	if !t.SlotsAssigned() {
		return nil, fmt.Errorf("plan: tree has nodes without slots (assign them first)")
	}
	same := appended && pl.extends(t)
	numSlots, marked := 0, false
	if same && pl.prev.marked && pl.prev.unique == cfg.SlotsUnique {
		numSlots, marked = pl.markNew(t, cfg.SlotsUnique)
	}
	pl.prev.tree, pl.prev.marked = false, false
	var err error
	if marked {
		err = t.validate(numSlots, skipSlotChecks)
	} else {
		numSlots, marked, err = t.validateSlots(&pl.dupBits, cfg.SlotsUnique)
	}
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
	pl.index(t)
	pathTokens := 0
	for _, q := range t.Queries {
		pathTokens += int(pl.anc[q.Node]) + q.Offset + 1
	}
	total := t.TotalTokens()
	// Every item has one query: one query in the tree, or flashdecoding's
	// per-query items.
	oneQuery := len(t.Queries) <= 1 || cfg.Method == MethodFlashDecoding
	variant, err := chooseVariant(cfg, float64(pathTokens)/float64(max(total, 1)), oneQuery)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	var tiles Tiles
	group := cfg.Shape.GroupSize()
	switch {
	case IsCoopMat(variant):
		tiles, err = ChooseCoopTiles(cfg.Shape, cfg.Limits)
	default:
		tiles, err = scalarTiles(cfg, len(t.Queries))
	}
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if cfg.Tiles != (Tiles{}) {
		if IsCoopMat(variant) {
			err = cfg.Tiles.coopCheck(cfg.Shape, cfg.Limits)
		} else {
			err = cfg.Tiles.check(cfg.Shape, cfg.Limits)
		}
		if err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
		tiles = cfg.Tiles
	}
	if variant == VariantDecode && tiles.decodeCheck(cfg.Shape, cfg.Limits) != nil {
		variant = VariantScalar // a shape the decode kernel does not fit
	}
	if cfg.BlockTokens < 0 {
		return nil, fmt.Errorf("plan: block size %d is negative", cfg.BlockTokens)
	}

	if cfg.BlockTokens == 0 {
		minItems := 64
		if variant == VariantCoopMat {
			minItems = coopMinItems
		}
		cfg.BlockTokens = autoBlockMin(cfg.Method, total, tiles.Tokens, ceilDiv(len(t.Queries)*group, tiles.Rows), minItems)
	}
	if cfg.MaxPasses <= 0 || cfg.MaxPasses > MaxTilePasses {
		cfg.MaxPasses = MaxTilePasses
	}
	p := &pl.plan
	meta, classes, runs := p.meta[:0], p.Classes[:0], p.runs[:0]
	*p = Plan{Config: cfg, Tiles: tiles, Variant: variant, NumQueries: len(t.Queries), NumSlots: numSlots}
	p.meta, p.runs = meta, runs
	if variant == VariantCoopMat {
		p.Classes = coopClasses(cfg.Shape, cfg.Limits, tiles, classes)
	} else {
		p.Classes = append(classes, tiles)
		if r := cfg.Limits.scalarClassRows; r > 0 && r < tiles.Rows && variant == VariantScalar {
			for wg := tiles.Workgroup; wg >= 4; wg /= 2 {
				if small := (Tiles{Workgroup: wg, Tokens: tiles.Tokens, Rows: r}); small.fits(cfg.Shape, cfg.Limits) {
					p.Classes = append(p.Classes[:0], small, tiles)
					break
				}
			}
		}
	}
	// Flatten items that only a few queries see (branch blocks) run in the
	// coopmat variant's one-subgroup class: shorter chunks, more of them.
	// The chunk follows the tree's size, so a unit is copied from the
	// previous plan only when it is the same.
	fewQueries, fewChunk := 0, 0
	if variant == VariantCoopMat && cfg.Method == MethodFlatten && len(p.Classes) > 1 {
		fewQueries = p.Classes[0].Rows / group
		fewChunk = coopFewChunk(cfg.BlockTokens, p.Classes[0].Tokens, total, cfg.Shape.KVHeads)
	}
	// The previous plan's items become prev's; this plan's go to the
	// other buffers. (pl.recs stay in unit order; classify orders a copy
	// by item class, so plans of several classes are reusable too.)
	pr := &pl.prev
	pl.data, pr.data = pr.data[:0], pl.data
	pl.recs, pr.recs = pr.recs[:0], pl.recs
	pl.units, pr.units = pr.units[:0], pl.units
	win := cfg.Limits.windowSlots(uint64(cfg.Shape.KVHeads * cfg.Shape.HeadDim * cfg.KV.Bytes()))
	windowed := win > 0 && numSlots > win
	if same && itemsOK && !windowed && pr.cfg == cfg && pr.tiles == tiles && pr.variant == variant && pr.fewChunk == fewChunk &&
		pl.sameQueryNodes(t) {
		pl.reusing = true
		pl.changes(t)
	}

	// Query slices of one row tile, and token chunks of at most MaxPasses
	// shared-memory passes (see MaxTilePasses).
	// (at most 32 queries: one mask word per token)
	slice := max(1, min(32, tiles.Rows/group))
	chunk := max(1, cfg.MaxPasses/ceilDiv(slice*group, tiles.Rows)) * tiles.Tokens
	dense := cfg.Method == MethodDenseMask
	compact := cfg.Method == MethodFlatten
	emit := func(segs []segment, q0 []int32) {
		ch := chunk
		if len(q0) <= fewQueries {
			ch = min(chunk, fewChunk)
		}
		pl.bound(t, segs, q0, slice, ch, dense, compact)
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
	p.Windows = p.Windows[:0]
	if windowed {
		pl.window(p, win)
	}
	if len(p.Windows) == 0 {
		p.Windows = nil
	}
	if err := pl.encode(p, pl.classify(p)); err != nil {
		return nil, err
	}
	p.IO.UniqueTokens = total
	p.IO.PathTokens = pathTokens
	kvRow := int64(cfg.Shape.KVHeads * cfg.Shape.HeadDim * cfg.KV.Bytes() * 2)
	p.IO.KVUniqueBytes = int64(total) * kvRow
	p.IO.QueryBytes = int64(p.NumQueries*cfg.Shape.QHeads*cfg.Shape.HeadDim) * 4
	p.IO.OutputBytes = p.IO.QueryBytes
	pl.remember(t, numSlots)
	pr.marked, pr.unique = marked, cfg.SlotsUnique
	pr.items, pr.cfg, pr.tiles, pr.variant, pr.fewChunk = !windowed, cfg, tiles, variant, fewChunk
	return p, nil
}

// scalarTiles picks the scalar variant's tiles for cfg and a tree of
// queries queries: few-row tiles (ChooseFewRowTiles) when no item can have
// 32 rows (flashdecoding's items are one query's; trees of fewer than
// 32/GQA queries), else ChooseTiles.
func scalarTiles(cfg Config, queries int) (Tiles, error) {
	rows := queries * cfg.Shape.GroupSize()
	if cfg.Method == MethodFlashDecoding {
		rows = cfg.Shape.GroupSize()
	}
	if rows < 32 {
		return ChooseFewRowTiles(cfg.Shape, cfg.Limits, rows)
	}
	return ChooseTiles(cfg.Shape, cfg.Limits)
}

// The auto-choice of partial_attn's variant (chooseVariant), from the
// H200 (Llama-3-8B layer, f16 KV, flatten, per layer, session 5): the
// coopmat variant with item classes ran the speculative star (204 queries
// per token) in 135 us against the scalar kernel's 286, few-shot b=50 (9.2
// per token) in 249 against 326, b=20 (7.3) in 141 against 157 and the
// sorting trace (8.4 per token) in 346 against 465. So coopmat is picked
// where queries share at least coopMatSharing per token on average; scalar
// where most tokens are read by one query or a few (a single sequence,
// flashdecoding's per-query items), which the few-row scalar tiles serve.
// Flashdecoding always gets scalar by itself: its items are one query's,
// so no K/V is shared beyond a query group whatever the tree.
const coopMatSharing = 7

// chooseVariant resolves cfg.KernelVariant (see Config); sharing is the
// tree's path tokens over its tokens (queries per token on average) and
// oneQuery says every item will have one query. The decode variant is
// chosen (or, forced, kept) only for plans of one-query items on devices
// that run it; the scalar variant runs the others.
func chooseVariant(cfg Config, sharing float64, oneQuery bool) (string, error) {
	want := cfg.KernelVariant
	if want == "" {
		if forced, ok := kernels.Forced(kernels.PartialAttn.Name); ok {
			want = forced
		}
	}
	usable := func() error {
		if cfg.KV != KVF16 {
			return fmt.Errorf("the coopmat variant reads fp16 KV only")
		}
		_, err := ChooseCoopTiles(cfg.Shape, cfg.Limits)
		return err
	}
	switch want {
	case "":
		if oneQuery && cfg.Limits.Decode {
			return VariantDecode, nil
		}
		shares := sharing >= coopMatSharing && cfg.Method != MethodFlashDecoding
		if cfg.Limits.CoopMat.M > 0 && cfg.KV == KVF16 && shares && usable() == nil {
			return VariantCoopMat, nil
		}
		return VariantScalar, nil
	case VariantScalar:
		return VariantScalar, nil
	case VariantDecode:
		if oneQuery && cfg.Limits.Decode {
			return VariantDecode, nil
		}
		return VariantScalar, nil
	case VariantCoopMat, VariantCoopMatV1:
		if cfg.KV != KVF16 {
			return VariantScalar, nil // fp32 KV keeps the scalar variant
		}
		if err := usable(); err != nil {
			return "", fmt.Errorf("variant %s: %w", want, err)
		}
		return want, nil
	}
	return "", fmt.Errorf("partial_attn has no variant %q", want)
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
	byTin := func(a, b int32) int { return int(pl.tin[t.Queries[a].Node]) - int(pl.tin[t.Queries[b].Node]) }
	// Queries usually come in depth-first order already (one per leaf).
	pl.inOrder = slices.IsSortedFunc(pl.queryByTin, byTin)
	if !pl.inOrder {
		slices.SortStableFunc(pl.queryByTin, byTin)
	}
	// qAt[t]: the first position in queryByTin of a query whose node's
	// tin is at least t, so a subtree's queries are one run of queryByTin.
	pl.qAt = grow(pl.qAt, n+1)
	qi := 0
	for at := 0; at <= n; at++ {
		for qi < nq && int(pl.tin[t.Queries[pl.queryByTin[qi]].Node]) < at {
			qi++
		}
		pl.qAt[at] = int32(qi)
	}
	pl.stamp = grow(pl.stamp, nq)
	if pl.stampGen == 0 || pl.stampGen > math.MaxUint32/2 {
		clear(pl.stamp)
		pl.stampGen = 1
	}
}

// seeing appends, in increasing order, the queries whose paths contain a
// node of segs (whether or not they see the segment's tokens).
func (pl *Planner) seeing(t *Tree, segs []segment, dst []int32) []int32 {
	if pl.inOrder {
		// A subtree's queries are a run of indices, and the runs of nodes
		// in depth-first order are nested or follow each other: merge them.
		end := int32(-1)
		for _, s := range segs {
			a, b := pl.qAt[pl.tin[s.node]], pl.qAt[pl.tout[s.node]]
			for q := max(a, end); q < b; q++ {
				dst = append(dst, q)
			}
			end = max(end, b)
		}
		return dst
	}
	pl.stampGen++
	gen := pl.stampGen
	start := len(dst)
	for _, s := range segs {
		for _, q := range pl.queryByTin[pl.qAt[pl.tin[s.node]]:pl.qAt[pl.tout[s.node]]] {
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
	used, end := 0, 0
	flush := func() {
		if len(segs) == 0 {
			return
		}
		// A block before the first change plans as before.
		pl.unit(end <= pl.firstChange, func() {
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
		})
		segs, used = segs[:0], 0
	}
	for _, n := range pl.dfs {
		tokens := t.Nodes[n].Tokens
		for from := 0; from < tokens; {
			take := min(tokens-from, size-used)
			segs = append(segs, segment{n, int32(from), int32(from + take)})
			used += take
			end += take
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
		pl.unit(pl.reusing && !pl.dirty[n], func() {
			seg := append(pl.segs[:0], segment{n, 0, int32(t.Nodes[n].Tokens)})
			pl.segs = seg
			q0 := pl.seeing(t, seg, pl.q0[:0])
			pl.q0 = q0
			if len(q0) == 0 {
				return // no query reads this node
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
		})
	}
}

// perQuery splits each query's own path into chunks (Flash-Decoding).
func (pl *Planner) perQuery(t *Tree, chunk int, emit func([]segment, []int32)) {
	for qi, q := range t.Queries {
		clean := pl.reusing && pl.prev.queries[qi].Offset == q.Offset && !pl.grownPath[q.Node]
		pl.unit(clean, func() { pl.queryPath(t, qi, q, chunk, emit) })
	}
}

// queryPath emits query qi's path in chunks of chunk tokens.
func (pl *Planner) queryPath(t *Tree, qi int, q Query, chunk int, emit func([]segment, []int32)) {
	{
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
//
// Queries are handled by their position in q0: each chunk segment gets two
// bitsets over those positions, the queries below its node (they see the
// whole segment) and the queries at its node (they see it up to their
// offset), so a slice's mask word costs a few shifts, not a path test per
// query.
func (pl *Planner) bound(t *Tree, segs []segment, q0 []int32, slice, chunk int, dense, compact bool) {
	n := 0
	for _, s := range segs {
		n += int(s.to - s.from)
	}
	words := (len(q0) + 63) / 64
	pl.pos = grow(pl.pos, len(t.Queries))
	for i, q := range q0 {
		pl.pos[q] = int32(i)
	}
	for i := len(pl.allPos); i < len(q0); i++ {
		pl.allPos = append(pl.allPos, int32(i)) // kept as 0, 1, 2, ...
	}
	all := pl.allPos[:len(q0)]
	for from := 0; from < n; from += chunk {
		to := min(from+chunk, n)
		cs := pl.chunkSegs[:0]
		at := 0
		for _, s := range segs {
			l := int(s.to - s.from)
			a, b := max(from, at), min(to, at+l)
			if a < b {
				cs = append(cs, segment{s.node, s.from + int32(a-at), s.from + int32(b-at)})
			}
			at += l
		}
		pl.chunkSegs = cs
		pl.chunkSlots = -1
		if len(cs) == 1 && pl.allBelow(cs[0].node, q0) {
			pl.uniformItems(t, cs[0], q0, slice)
			continue
		}
		pl.segBits(t, cs, q0, words)
		partQ := all
		seeAll := dense || pl.nSees == len(q0)
		if !seeAll && (from != 0 || to != n) {
			partQ = pl.partQ[:0]
			for p := range q0 {
				if dense || pl.sees[p] {
					partQ = append(partQ, int32(p))
				}
			}
			pl.partQ = partQ
		}
		for qs := 0; qs < len(partQ); qs += slice {
			qe := min(qs+slice, len(partQ))
			sq := partQ[qs:qe]
			if !seeAll && (qs != 0 || qe != len(partQ)) {
				kept := pl.sliceQ[:0]
				for _, p := range sq {
					if dense || pl.sees[p] {
						kept = append(kept, p)
					}
				}
				pl.sliceQ = kept
				sq = kept
			}
			if len(sq) > 0 {
				pl.item(t, cs, to-from, q0, sq, words, compact)
			}
		}
	}
}

// allBelow reports whether q0 is exactly the queries strictly below node
// n (depth-first query order only): then every query sees every token of
// n, the case of a shared prompt or prefix.
func (pl *Planner) allBelow(n int32, q0 []int32) bool {
	if !pl.inOrder || len(q0) == 0 {
		return false
	}
	lo, mid, hi := pl.qAt[pl.tin[n]], pl.qAt[pl.tin[n]+1], pl.qAt[pl.tout[n]]
	return lo == mid && int(hi-mid) == len(q0) && q0[0] == mid && q0[len(q0)-1] == hi-1
}

// uniformItems emits the items of a chunk of one segment that every query
// of q0 sees whole (allBelow): one per slice of queries, sharing one slot
// list, without masks, as item would make them.
func (pl *Planner) uniformItems(t *Tree, s segment, q0 []int32, slice int) {
	slotsOff := uint32(len(pl.data))
	pl.data = append(pl.data, asUint32(t.Nodes[s.node].Slots[s.from:s.to])...)
	for qs := 0; qs < len(q0); qs += slice {
		qe := min(qs+slice, len(q0))
		rec := kernels.ItemRecord{SlotsOff: slotsOff, NumSlots: uint32(s.to - s.from),
			QueriesOff: uint32(len(pl.data)), NumQueries: uint32(qe - qs)}
		pl.data = append(pl.data, asUint32(q0[qs:qe])...)
		pl.recs = append(pl.recs, rec)
	}
}

// segBits fills, for every segment, the bitsets (over positions in q0) of
// the queries below its node and of those at its node.
func (pl *Planner) segBits(t *Tree, cs []segment, q0 []int32, words int) {
	bits := grow(pl.bits, 2*words*len(cs))
	clear(bits)
	pl.bits = bits
	pairs := pl.pairs[:0]
	sees := grow(pl.sees, len(q0))
	clear(sees)
	pl.sees = sees
	nSees := 0
	defer func() { pl.nSees = nSees }()
	for j, s := range cs {
		below := bits[2*words*j : 2*words*j+words]
		at := bits[2*words*j+words : 2*words*(j+1)]
		lo, hi := pl.qAt[pl.tin[s.node]], pl.qAt[pl.tout[s.node]]
		if mid := pl.qAt[pl.tin[s.node]+1]; pl.inOrder && mid < hi {
			// The queries below the node (after those at it) are indices
			// mid..hi-1; when q0 holds them all, they are one run of
			// positions.
			pa := pl.pos[mid]
			pb := int(pa) + int(hi-mid)
			if pa >= 0 && pb <= len(q0) && q0[pa] == mid && q0[pb-1] == hi-1 {
				setBits(below, int(pa), pb)
				for p := int(pa); p < pb; p++ {
					if !sees[p] {
						sees[p] = true
						nSees++
					}
				}
				if len(cs) > 1 {
					for p := pa; p < int32(pb); p++ {
						pairs = append(pairs, [2]int32{p, int32(j)})
					}
				}
				hi = mid
			}
		}
		for _, q := range pl.queryByTin[lo:hi] {
			qn := int32(t.Queries[q].Node)
			p := pl.pos[q]
			if p < 0 || int(p) >= len(q0) || q0[p] != q {
				continue // not a query of this item
			}
			if qn == s.node {
				at[p/64] |= 1 << (p % 64)
				if !sees[p] && int32(t.Queries[q].Offset) >= s.from {
					sees[p] = true
					nSees++
				}
			} else {
				below[p/64] |= 1 << (p % 64)
				if !sees[p] {
					sees[p] = true
					nSees++
				}
			}
			if len(cs) > 1 {
				pairs = append(pairs, [2]int32{p, int32(j)})
			}
		}
	}
	pl.pairs = pairs
	if len(cs) == 1 {
		return // item visits the one segment; no lists needed
	}
	// Each position's segments, ascending (pairs come in segment order).
	start := grow(pl.segStart, len(q0)+1)
	clear(start)
	for _, pj := range pairs {
		start[pj[0]+1]++
	}
	for i := range len(q0) {
		start[i+1] += start[i]
	}
	list := grow(pl.segList, len(pairs))
	fill := grow(pl.segFill, len(q0))
	copy(fill, start[:len(q0)])
	for _, pj := range pairs {
		list[fill[pj[0]]] = pj[1]
		fill[pj[0]]++
	}
	pl.segStart, pl.segList, pl.segFill = start, list, fill
	pl.segStamp = grow(pl.segStamp, len(cs))
	clear(pl.segStamp)
	pl.segGen = 0
}

// fillWords sets every word of dst to w (doubling copies for long runs).
func fillWords(dst []uint32, w uint32) {
	if len(dst) == 0 {
		return
	}
	dst[0] = w
	for k := 1; k < len(dst); k *= 2 {
		copy(dst[k:], dst[:k])
	}
}

// setBits sets bits [a, b) of set.
func setBits(set []uint64, a, b int) {
	for a < b {
		w, sh := a/64, uint(a%64)
		n := min(b-a, 64-int(sh))
		m := ^uint64(0) >> (64 - uint(n)) << sh
		set[w] |= m
		a += n
	}
}

// gather returns bit i set where position qs[i] is set in set.
func gather(set []uint64, qs []int32) uint32 {
	first := qs[0]
	if last := qs[len(qs)-1]; int(last-first) == len(qs)-1 {
		// Consecutive positions: one or two shifted words.
		w, sh := first/64, uint(first%64)
		v := set[w] >> sh
		if sh != 0 && int(w)+1 < len(set) {
			v |= set[w+1] << (64 - sh)
		}
		if len(qs) < 64 {
			v &= 1<<len(qs) - 1
		}
		return uint32(v)
	}
	var out uint32
	for i, p := range qs {
		out |= uint32(set[p/64]>>(p%64)&1) << i
	}
	return out
}

// run is n consecutive tokens of segment seg, from token from of its
// node, that the same queries see (mask word w).
type run struct {
	w            uint32
	seg, from, n int32
}

// item appends one work item: the tokens tokens of segs (without those no query sees,
// when compact) and the queries at positions qs of q0 (at most 32: one mask
// word per token), with a mask unless every query sees every token. The
// tokens are handled as runs that share a mask word, so a work item costs
// per segment, not per token, unless it needs a mask.
func (pl *Planner) item(t *Tree, segs []segment, tokens int, q0, qs []int32, words int, compact bool) {
	full := uint32(1)<<len(qs) - 1
	if len(qs) == 32 {
		full = ^uint32(0)
	}
	runs := pl.runs[:0]
	allFull := true
	kept := 0
	// Compact items need only the segments their queries see (a slice of
	// a speculative tree's leaves sees a handful of its block's hundreds).
	visit := pl.visit[:0]
	if compact && len(segs) > 1 {
		pl.segGen++
		for _, p := range qs {
			for _, j := range pl.segList[pl.segStart[p]:pl.segStart[p+1]] {
				if pl.segStamp[j] != pl.segGen {
					pl.segStamp[j] = pl.segGen
					visit = append(visit, j)
				}
			}
		}
		slices.Sort(visit)
		if len(visit) < len(segs) {
			allFull = false
		}
	} else {
		for j := range segs {
			visit = append(visit, int32(j))
		}
	}
	pl.visit = visit
	for _, j := range visit {
		s := segs[j]
		// Queries below the node see the whole segment; queries at the
		// node see its tokens up to their offset, so tokens up to the
		// smallest such offset share one word.
		w0 := 2 * words * int(j)
		base := gather(pl.bits[w0:w0+words], qs)
		own := gather(pl.bits[w0+words:w0+2*words], qs)
		if base|own == 0 {
			allFull = false
			runs = append(runs, run{0, j, s.from, s.to - s.from})
			continue
		}
		uniformTo := s.to
		if own != 0 {
			minOwn := int32(math.MaxInt32)
			for m := own; m != 0; m &= m - 1 {
				p := qs[bits.TrailingZeros32(m)]
				minOwn = min(minOwn, int32(t.Queries[q0[p]].Offset))
			}
			uniformTo = max(s.from, min(s.to, minOwn+1))
		}
		if n := uniformTo - s.from; n > 0 {
			runs = append(runs, run{base | own, j, s.from, n})
		}
		for off := uniformTo; off < s.to; off++ {
			w := base
			for m := own; m != 0; m &= m - 1 {
				i := bits.TrailingZeros32(m)
				if off <= int32(t.Queries[q0[qs[i]]].Offset) {
					w |= 1 << i
				}
			}
			runs = append(runs, run{w, j, off, 1})
		}
	}
	for _, r := range runs {
		if r.w != full {
			allFull = false
		}
		if r.w != 0 {
			kept += int(r.n)
		}
	}
	pl.runs = runs
	if !compact || allFull {
		kept = tokens
	}
	if kept == 0 {
		return
	}
	rec := kernels.ItemRecord{SlotsOff: uint32(len(pl.data)), NumSlots: uint32(kept)}
	// Slices that keep every token of their chunk share one slot list: a
	// prompt block read by seven slices is listed once, not seven times.
	switch {
	case kept == tokens && pl.chunkSlots >= 0:
		rec.SlotsOff = uint32(pl.chunkSlots)
	case kept == tokens:
		pl.chunkSlots = len(pl.data)
		for _, s := range segs {
			pl.data = append(pl.data, asUint32(t.Nodes[s.node].Slots[s.from:s.to])...)
		}
	default:
		for _, r := range runs {
			if r.w != 0 {
				pl.data = append(pl.data, asUint32(t.Nodes[segs[r.seg].node].Slots[r.from:r.from+r.n])...)
			}
		}
	}
	rec.QueriesOff, rec.NumQueries = uint32(len(pl.data)), uint32(len(qs))
	for _, p := range qs {
		pl.data = append(pl.data, uint32(q0[p]))
	}
	// After dropping unseen tokens the mask may have become full.
	if kept != tokens {
		allFull = true
		for _, r := range runs {
			if r.w != 0 && r.w != full {
				allFull = false
				break
			}
		}
	}
	if !allFull {
		rec.MaskOff, rec.MaskWords = uint32(len(pl.data)), 1
		at := len(pl.data)
		pl.data = slices.Grow(pl.data, kept)[:at+kept]
		for _, r := range runs {
			if kept == tokens || r.w != 0 {
				fillWords(pl.data[at:at+int(r.n)], r.w)
				at += int(r.n)
			}
		}
	}
	pl.recs = append(pl.recs, rec)
}

// window cuts the items into windows of w slots that one binding of K and
// V can cover: each item's tokens are split by window (in token order
// within each), slot lists become relative to their window's first slot,
// and items are grouped by window, in order, for one dispatch per window.
// Only pools beyond the device's storage-buffer range take this path.
func (pl *Planner) window(p *Plan, w int) {
	type windowed struct {
		win int32
		rec kernels.ItemRecord
	}
	var out []windowed
	var wins []int32
	for _, rec := range pl.recs {
		slots := pl.data[rec.SlotsOff : rec.SlotsOff+rec.NumSlots]
		wins = wins[:0]
		for _, sl := range slots {
			if win := int32(int(sl) / w); !slices.Contains(wins, win) {
				wins = append(wins, win)
			}
		}
		slices.Sort(wins)
		for _, win := range wins {
			sub := rec
			sub.SlotsOff = uint32(len(pl.data))
			base := uint32(int(win) * w)
			for _, sl := range pl.data[rec.SlotsOff : rec.SlotsOff+rec.NumSlots] {
				if int32(int(sl)/w) == win {
					pl.data = append(pl.data, sl-base)
				}
			}
			sub.NumSlots = uint32(len(pl.data)) - sub.SlotsOff
			if rec.MaskWords != 0 {
				sub.MaskOff = uint32(len(pl.data))
				for t := range rec.NumSlots {
					if int32(int(pl.data[rec.SlotsOff+t])/w) == win {
						at := rec.MaskOff + t*rec.MaskWords
						pl.data = append(pl.data, pl.data[at:at+rec.MaskWords]...)
					}
				}
			}
			out = append(out, windowed{win, sub})
		}
	}
	slices.SortStableFunc(out, func(a, b windowed) int { return int(a.win) - int(b.win) })
	pl.recs = pl.recs[:0]
	for i, o := range out {
		if i == 0 || o.win != out[i-1].win {
			p.Windows = append(p.Windows, Window{SlotBase: int(o.win) * w, Slots: w, FirstItem: i})
		}
		p.Windows[len(p.Windows)-1].Items++
		pl.recs = append(pl.recs, o.rec)
	}
}

// classify returns the plan's items in dispatch order, each window's by
// class (Plan.Classes: the smallest whose rows hold the item's, stable
// within a class), and lists the plan's dispatches, one per window and
// class that has items. With several classes the items are a copy:
// pl.recs stay in unit order, for PlanNext to copy units from. In the
// coopmat variant, a class of too few workgroups for a dispatch of its
// own (coopMinClassWorkgroups) joins the next larger class with items
// when it has at most a quarter of that class's items.
func (pl *Planner) classify(p *Plan) []kernels.ItemRecord {
	p.runs = p.runs[:0]
	nc := len(p.Classes)
	pl.classOf = grow(pl.classOf, nc)
	for c := range pl.classOf {
		pl.classOf[c] = c
	}
	if p.Variant == VariantCoopMat && nc > 1 {
		counts := grow(pl.classCount, nc)
		clear(counts)
		for _, rec := range pl.recs {
			counts[p.itemClass(rec)]++
		}
		for c := 0; c < nc-1; c++ {
			if counts[c] == 0 || counts[c]*p.Shape.KVHeads >= coopMinClassWorkgroups {
				continue
			}
			for d := c + 1; d < nc; d++ {
				if counts[d] > 0 {
					if 4*counts[c] <= counts[d] {
						counts[d] += counts[c]
						counts[c] = 0
						pl.classOf[c] = d
					}
					break
				}
			}
		}
		for c := nc - 1; c >= 0; c-- {
			pl.classOf[c] = pl.classOf[pl.classOf[c]]
		}
		pl.classCount = counts
	}
	if nc == 1 {
		nw := max(len(p.Windows), 1)
		for w := 0; w < nw; w++ {
			first, n := 0, len(pl.recs)
			if len(p.Windows) > 0 {
				first, n = p.Windows[w].FirstItem, p.Windows[w].Items
			}
			p.runs = append(p.runs, attnRun{window: w, class: 0, first: first, items: n})
		}
		return pl.recs
	}
	sorted := pl.recsTmp[:0]
	for w := 0; w < max(len(p.Windows), 1); w++ {
		recs := pl.recs
		if len(p.Windows) > 0 {
			recs = recs[p.Windows[w].FirstItem : p.Windows[w].FirstItem+p.Windows[w].Items]
		}
		for c := range p.Classes {
			start := len(sorted)
			for _, rec := range recs {
				if pl.classOf[p.itemClass(rec)] == c {
					sorted = append(sorted, rec)
				}
			}
			if len(sorted) > start {
				p.runs = append(p.runs, attnRun{window: w, class: c, first: start, items: len(sorted) - start})
			}
		}
	}
	pl.recsTmp = sorted
	return sorted
}

// itemClass is the class that runs an item: the first whose rows hold its
// query rows, else the last.
func (p *Plan) itemClass(rec kernels.ItemRecord) int {
	rows := int(rec.NumQueries) * p.Shape.GroupSize()
	for c, t := range p.Classes {
		if rows <= t.Rows {
			return c
		}
	}
	return len(p.Classes) - 1
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
func (pl *Planner) encode(p *Plan, recs []kernels.ItemRecord) error {
	items := len(recs)
	if items == 0 {
		return fmt.Errorf("plan: the tree gives no work")
	}
	s := p.Shape
	table := uint32(items * itemWords)
	counts := grow(pl.counts, p.NumQueries+1)
	clear(counts)
	partials := 0
	// recs keep offsets into pl.data, so that the next step may reuse
	// them (PlanNext); the table gets them shifted past itself.
	for i := range recs {
		rec := &recs[i]
		rec.PartialBase = uint32(partials)
		partials += int(rec.NumQueries)
		for _, q := range pl.data[rec.QueriesOff : rec.QueriesOff+rec.NumQueries] {
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
	for i, rec := range recs {
		rec.SlotsOff += table
		rec.QueriesOff += table
		if rec.MaskWords != 0 {
			rec.MaskOff += table
		}
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
	for _, rec := range recs {
		qs := pl.data[rec.QueriesOff : rec.QueriesOff+rec.NumQueries]
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

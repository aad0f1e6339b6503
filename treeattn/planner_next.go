package treeattn

import (
	"math"
	"slices"

	"github.com/deft-vk/deft/kernels"
)

// Incremental planning. A decoding step's tree is mostly the previous
// step's: the same nodes, a few of them with tokens appended, and queries
// moved to the new last tokens. PlanNext checks only the new slots, and
// copies the work items of the units (flatten and densemask blocks, nodes,
// flashdecoding queries) whose tokens and queries did not change from the
// previous plan instead of planning them again. The plan is the one Plan
// would make, word for word (TestPlanNextMatchesPlan).

// prevStep is what the planner keeps of its previous plan.
type prevStep struct {
	tree    bool  // tokens, parents and queries below describe the previous tree
	marked  bool  // dupBits holds exactly its slots (or, when unique, maxSlot is its largest)
	unique  bool  // its Config.SlotsUnique
	maxSlot int32 // its largest slot
	tokens  []int32
	parents []int32
	queries []Query
	// items: its units can be copied (it made no windows).
	items   bool
	cfg     Config // resolved (block size, passes, scale)
	tiles   Tiles
	variant string
	// fewChunk: its coopmat one-query chunk (coopFewChunk), 0 if none
	fewChunk int
	data     []uint32
	recs     []kernels.ItemRecord
	units    []unit
}

// unit is the items recs[r0:r1] and their lists data[d0:d1] of one flatten
// or densemask block, one node (node, nodechunk) or one query
// (flashdecoding). A unit's items point only into its own lists.
type unit struct{ r0, r1, d0, d1 int32 }

// PlanNext plans the step after the Planner's previous plan, making the
// same plan as Plan. appended is the caller's promise that t is that
// plan's tree with tokens appended: the same nodes with the same parents,
// each node's Slots beginning with its previous slots (kvpool steps of the
// same Step.Layout). Queries may differ. Then only the new slots are
// checked, and the work items of units whose tokens and queries did not
// change are copied rather than planned. Without the promise, or when the
// node table differs (checked: node count, parents, no node shrank), or
// the block size, tiles or variant changed, it plans from scratch.
func (pl *Planner) PlanNext(t *Tree, cfg Config, appended bool) (*Plan, error) {
	return pl.planStep(t, cfg, appended)
}

// extends reports whether t has the previous tree's nodes, none shorter,
// with slot lists of the right length.
func (pl *Planner) extends(t *Tree) bool {
	pr := &pl.prev
	if !pr.tree || len(t.Nodes) != len(pr.tokens) {
		return false
	}
	for i, nd := range t.Nodes {
		if int32(nd.Parent) != pr.parents[i] || nd.Tokens < int(pr.tokens[i]) || len(nd.Slots) != nd.Tokens ||
			nd.Tokens > math.MaxInt32 {
			return false
		}
	}
	return true
}

// markNew checks the slots t appends to the previous tree (see extends):
// not negative and, unless unique, not used before. It returns the pool
// size the tree needs; ok is false when a check failed (the caller then
// checks the whole tree, which names the offending tokens).
func (pl *Planner) markNew(t *Tree, unique bool) (numSlots int, ok bool) {
	pr := &pl.prev
	maxSlot := pr.maxSlot
	total := t.TotalTokens()
	for i, nd := range t.Nodes {
		add := nd.Slots[pr.tokens[i]:]
		if len(add) == 0 {
			continue
		}
		if unique {
			lo, hi := slotRange(add)
			if lo < 0 {
				return 0, false
			}
			maxSlot = max(maxSlot, hi)
			continue
		}
		if pl.dupBits, maxSlot, ok = markSlots(pl.dupBits, add, maxSlot, total); !ok {
			return 0, false
		}
	}
	pr.maxSlot = maxSlot
	return int(maxSlot) + 1, true
}

// remember keeps what the next PlanNext compares with.
func (pl *Planner) remember(t *Tree, numSlots int) {
	pr := &pl.prev
	pr.tokens = grow(pr.tokens, len(t.Nodes))
	pr.parents = grow(pr.parents, len(t.Nodes))
	for i, nd := range t.Nodes {
		pr.tokens[i], pr.parents[i] = int32(nd.Tokens), int32(nd.Parent)
	}
	pr.queries = append(pr.queries[:0], t.Queries...)
	pr.maxSlot = int32(numSlots - 1)
	pr.tree = true
}

// changes finds what differs from the previous tree (t extends it, with
// the same query nodes): firstChange is the first depth-first token
// position whose block may plan differently, dirty marks the nodes that
// grew or whose queries moved, grownPath the nodes with a grown node on
// their path.
func (pl *Planner) changes(t *Tree) {
	n := len(t.Nodes)
	pl.tokStart = grow(pl.tokStart, n)
	at := 0
	for _, v := range pl.dfs {
		pl.tokStart[v] = at
		at += t.Nodes[v].Tokens
	}
	pl.dirty = grow(pl.dirty, n)
	pl.grownPath = grow(pl.grownPath, n)
	first := math.MaxInt
	for i, nd := range t.Nodes {
		old := int(pl.prev.tokens[i])
		g := nd.Tokens > old
		if g {
			first = min(first, pl.tokStart[i]+old)
		}
		pl.dirty[i] = g
		pl.grownPath[i] = g || (i > 0 && pl.grownPath[nd.Parent])
	}
	for qi, q := range t.Queries {
		if old := pl.prev.queries[qi].Offset; old != q.Offset {
			// Tokens of the node up to both offsets are seen either way.
			first = min(first, pl.tokStart[q.Node]+min(old, q.Offset))
			pl.dirty[q.Node] = true
		}
	}
	pl.firstChange = first
}

// sameQueryNodes reports whether t's queries are the previous tree's
// queries, at most with other offsets.
func (pl *Planner) sameQueryNodes(t *Tree) bool {
	if len(t.Queries) != len(pl.prev.queries) {
		return false
	}
	for i, q := range t.Queries {
		if q.Node != pl.prev.queries[i].Node {
			return false
		}
	}
	return true
}

// copyUnit appends unit u of the previous plan, its list offsets moved to
// where its lists land now.
func (pl *Planner) copyUnit(u unit) {
	d0 := len(pl.data)
	pl.data = append(pl.data, pl.prev.data[u.d0:u.d1]...)
	delta := uint32(d0) - uint32(u.d0)
	for _, r := range pl.prev.recs[u.r0:u.r1] {
		r.SlotsOff += delta
		r.QueriesOff += delta
		if r.MaskWords != 0 {
			r.MaskOff += delta
		}
		pl.recs = append(pl.recs, r)
	}
}

// unit plans unit k (the k-th block, node or query of the method) with
// plan, or copies it from the previous plan when clean, and records it.
func (pl *Planner) unit(clean bool, plan func()) {
	k := len(pl.units)
	r0, d0 := int32(len(pl.recs)), int32(len(pl.data))
	if pl.reusing && clean && k < len(pl.prev.units) {
		pl.copyUnit(pl.prev.units[k])
		pl.reused++
	} else {
		plan()
	}
	pl.units = append(pl.units, unit{r0, int32(len(pl.recs)), d0, int32(len(pl.data))})
}

// Reused returns how many units the last plan copied from the one before
// (tests and benchmarks).
func (pl *Planner) Reused() int { return pl.reused }

// Extends reports whether next is prev with tokens appended: the same
// nodes with the same parents, each node's slots beginning with its slots
// in prev (PlanNext's promise). It reads every slot; decoding knows this
// without looking (kvpool.Step.Layout), benchmarks of recorded trees ask.
func Extends(prev, next *Tree) bool {
	if prev == nil || next == nil || len(prev.Nodes) != len(next.Nodes) {
		return false
	}
	for i, a := range prev.Nodes {
		b := next.Nodes[i]
		if a.Parent != b.Parent || len(a.Slots) > len(b.Slots) || !slices.Equal(a.Slots, b.Slots[:len(a.Slots)]) {
			return false
		}
	}
	return true
}

// Package treeattn models decoding trees and computes tree attention on Vulkan devices.
package treeattn

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Size limits enforced by Tree.Validate.
const (
	// MaxTreeNodes is the largest number of nodes in a tree.
	MaxTreeNodes = 1 << 20
	// MaxTreeQueries is the largest number of queries in a tree.
	MaxTreeQueries = 1 << 20
	// MaxTreeTokens is the largest total number of tokens over all nodes.
	MaxTreeTokens = 1 << 26
)

// Node is one node of a decoding tree: a run of Tokens consecutive tokens
// whose parent node is Parent.
//
// Nodes of a Tree are stored in topological order: a node's Parent index is
// smaller than its own index, so node 0 is always the root and is the only
// node with Parent == -1. This rules out cycles by construction.
type Node struct {
	// Parent is the index of the parent node in Tree.Nodes, or -1 for the
	// root.
	Parent int
	// Tokens is the number of tokens in the node, at least 1.
	Tokens int
	// Slots gives the KV-pool slot of each token (len(Slots) == Tokens).
	// The slots of a node need not be contiguous. A nil Slots means "not
	// assigned yet"; see Tree.AssignContiguousSlots.
	Slots []int32
}

// Query is a token position whose attention output is computed: token
// Offset of node Node. It attends to every token of every strict ancestor of
// Node, root first, and to tokens 0..Offset of Node itself.
type Query struct {
	Node, Offset int
}

// Tree is a decoding tree together with the queries to compute.
type Tree struct {
	Nodes   []Node
	Queries []Query
}

// Validate checks that t is a well-formed tree whose slots index a KV pool of
// numSlots slots:
//
//   - there is at least one node and at least one query, and at most
//     MaxTreeNodes nodes, MaxTreeQueries queries and MaxTreeTokens tokens;
//   - exactly one node, node 0, is the root (Parent == -1), and every other
//     node's Parent is the index of an earlier node (topological order, which
//     excludes cycles);
//   - every node has Tokens >= 1, and when its Slots are assigned (non-nil)
//     len(Slots) == Tokens, each slot is in [0, numSlots), and no slot is used
//     twice anywhere in the tree;
//   - every query names an existing node and 0 <= Offset < that node's
//     Tokens.
//
// Nodes with nil Slots are accepted; code that needs slots must check
// SlotsAssigned or call AssignContiguousSlots first.
func (t *Tree) Validate(numSlots int) error {
	if t == nil {
		return errors.New("validate tree: nil tree")
	}
	if err := t.validate(numSlots, nil); err != nil {
		return fmt.Errorf("validate tree: %w", err)
	}
	return nil
}

// validateSlots validates t against the smallest pool that holds its slots
// and returns that pool's size. It checks slots in one pass, with *bitmap
// (kept by the caller between calls) marking the slots seen: the planner's
// validation of a step costs one read of each slot. unique skips the
// duplicate check (the caller guarantees distinct slots).
//
// marked reports that the check ran in full: *bitmap then holds exactly
// the tree's slots (unless unique), which PlanNext extends with the next
// step's new slots.
func (t *Tree) validateSlots(bitmap *[]uint64, unique bool) (numSlots int, marked bool, err error) {
	maxSlot := int32(-1)
	if unique {
		for i, nd := range t.Nodes {
			if len(nd.Slots) != nd.Tokens {
				continue // reported by validate below
			}
			lo, hi := slotRange(nd.Slots)
			if lo < 0 {
				return 0, false, negativeSlot(i, nd.Slots)
			}
			maxSlot = max(maxSlot, hi)
		}
		return int(maxSlot) + 1, true, t.validate(int(maxSlot)+1, skipSlotChecks)
	}
	seen := *bitmap
	clear(seen)
	total := t.TotalTokens()
	for i, nd := range t.Nodes {
		if nd.Slots == nil || len(nd.Slots) != nd.Tokens {
			continue // reported by validate below
		}
		var ok bool
		seen, maxSlot, ok = markSlots(seen, nd.Slots, maxSlot, total)
		*bitmap = seen
		if !ok {
			if _, err := negativeOrNil(i, nd.Slots); err != nil {
				return 0, false, err
			}
			// A repeated slot (validate names both tokens), or sparse,
			// huge slot numbers (the general check sorts).
			return t.NumSlots(), false, t.validate(t.NumSlots(), nil)
		}
	}
	numSlots = int(maxSlot) + 1
	return numSlots, true, t.validate(numSlots, skipSlotChecks)
}

// slotRange returns the smallest and largest slot of a list (0, -1 for an
// empty one), run by run of consecutive slots; lo < 0 when a slot is
// negative or a run wraps past MaxInt32.
func slotRange(slots []int32) (lo, hi int32) {
	if len(slots) == 0 {
		return 0, -1
	}
	lo, hi = slots[0], slots[0]
	for j := 0; j < len(slots); {
		k := runEnd(slots, j)
		a, b := slots[j], slots[j]+int32(k-j-1)
		if b < a {
			return -1, hi
		}
		lo, hi = min(lo, a), max(hi, b)
		j = k
	}
	return lo, hi
}

// runEnd returns the end of the run of consecutive slots starting at j.
func runEnd(slots []int32, j int) int {
	k := j + 1
	// Eight at a time, without a branch per slot.
	for k+8 <= len(slots) {
		s := slots[k-1 : k+8]
		if (s[1]-s[0]-1)|(s[2]-s[1]-1)|(s[3]-s[2]-1)|(s[4]-s[3]-1)|
			(s[5]-s[4]-1)|(s[6]-s[5]-1)|(s[7]-s[6]-1)|(s[8]-s[7]-1) != 0 {
			break
		}
		k += 8
	}
	for k < len(slots) && slots[k] == slots[k-1]+1 {
		k++
	}
	return k
}

// negativeSlot names the first negative slot of node i.
func negativeSlot(i int, slots []int32) error {
	_, err := negativeOrNil(i, slots)
	return err
}

func negativeOrNil(i int, slots []int32) (int, error) {
	for j, s := range slots {
		if s < 0 {
			return j, fmt.Errorf("node %d token %d: slot %d is negative", i, j, s)
		}
	}
	return -1, nil
}

// markSlots sets the bits of slots in seen, run by run of consecutive slots
// (pages of a KV pool, a snapshot's contiguous nodes), so a step's check
// costs a word operation per 64 slots rather than a test per slot. It
// reports false on a negative or repeated slot, or a slot so large that a
// bitmap would outgrow 4*total+4096 bytes (the caller then falls back to
// the general check); maxSlot is updated.
func markSlots(seen []uint64, slots []int32, maxSlot int32, total int) ([]uint64, int32, bool) {
	for j := 0; j < len(slots); {
		lo := slots[j]
		k := runEnd(slots, j)
		hi := lo + int32(k-j) - 1 // run [lo, hi]
		j = k
		if lo < 0 || hi < lo { // hi < lo: the run wrapped past MaxInt32
			return seen, maxSlot, false
		}
		w1 := int(hi / 64)
		if w1 >= len(seen) {
			if (w1+1)*8 > 4*total+4096 {
				return seen, maxSlot, false
			}
			seen = append(seen, make([]uint64, w1+1-len(seen))...)
		}
		w0 := int(lo / 64)
		for w := w0; w <= w1; w++ {
			m := ^uint64(0)
			if w == w0 {
				m &= ^uint64(0) << (lo % 64)
			}
			if w == w1 {
				m &= ^uint64(0) >> (63 - hi%64)
			}
			if seen[w]&m != 0 {
				return seen, maxSlot, false
			}
			seen[w] |= m
		}
		maxSlot = max(maxSlot, hi)
	}
	return seen, maxSlot, true
}

// skipSlotChecks tells validate that the slots were checked already.
var skipSlotChecks = new([]uint64)

// validate checks t; bitmap, when not nil, is scratch memory for the
// duplicate-slot check that the caller keeps between calls, and
// skipSlotChecks skips the checks of slot values.
func (t *Tree) validate(numSlots int, bitmap *[]uint64) error {
	n := len(t.Nodes)
	switch {
	case n == 0:
		return errors.New("tree has no nodes")
	case n > MaxTreeNodes:
		return fmt.Errorf("tree has %d nodes, more than the limit %d", n, MaxTreeNodes)
	case len(t.Queries) == 0:
		return errors.New("tree has no queries")
	case len(t.Queries) > MaxTreeQueries:
		return fmt.Errorf("tree has %d queries, more than the limit %d", len(t.Queries), MaxTreeQueries)
	case numSlots < 0:
		return fmt.Errorf("negative KV pool size %d", numSlots)
	}
	if err := t.validateParents(); err != nil {
		return err
	}
	total := 0
	maxSlot := int32(-1)
	for i, nd := range t.Nodes {
		if nd.Tokens < 1 {
			return fmt.Errorf("node %d: tokens is %d, must be at least 1", i, nd.Tokens)
		}
		if nd.Tokens > MaxTreeTokens-total {
			return fmt.Errorf("node %d: total token count exceeds the limit %d", i, MaxTreeTokens)
		}
		total += nd.Tokens
		if nd.Slots == nil {
			continue
		}
		if len(nd.Slots) != nd.Tokens {
			return fmt.Errorf("node %d: has %d slots for %d tokens", i, len(nd.Slots), nd.Tokens)
		}
		if bitmap == skipSlotChecks {
			continue
		}
		for j, s := range nd.Slots {
			if s < 0 || int(s) >= numSlots {
				return fmt.Errorf("node %d token %d: slot %d outside the KV pool [0, %d)", i, j, s, numSlots)
			}
			maxSlot = max(maxSlot, s)
		}
	}
	if bitmap == skipSlotChecks {
		maxSlot = -1
	}
	if err := t.checkDuplicateSlots(total, maxSlot, bitmap); err != nil {
		return err
	}
	for qi, q := range t.Queries {
		if q.Node < 0 || q.Node >= n {
			return fmt.Errorf("query %d: node %d does not exist (tree has %d nodes)", qi, q.Node, n)
		}
		if tok := t.Nodes[q.Node].Tokens; q.Offset < 0 || q.Offset >= tok {
			return fmt.Errorf("query %d: offset %d outside node %d, which has %d tokens", qi, q.Offset, q.Node, tok)
		}
	}
	return nil
}

// validateParents checks the root and the parent links.
func (t *Tree) validateParents() error {
	n := len(t.Nodes)
	var roots []int
	for i, nd := range t.Nodes {
		if nd.Parent == -1 {
			roots = append(roots, i)
			if len(roots) > 8 {
				break
			}
		}
	}
	switch {
	case len(roots) == 0:
		return errors.New("tree has no root (a node with parent -1)")
	case len(roots) > 1:
		return fmt.Errorf("tree has several roots (nodes %s have parent -1); exactly one is allowed", formatIntList(roots, 8))
	case roots[0] != 0:
		return fmt.Errorf("root is node %d, but node 0 must be the root: nodes must be listed in topological order (parent before child)", roots[0])
	}
	for i := 1; i < n; i++ {
		p := t.Nodes[i].Parent
		switch {
		case p < 0 || p >= n:
			return fmt.Errorf("node %d: missing parent %d (tree has nodes 0..%d)", i, p, n-1)
		case p == i:
			return fmt.Errorf("node %d: cycle: the node is its own parent", i)
		case p > i:
			if cyc := t.findCycle(i); cyc != nil {
				return fmt.Errorf("node %d: cycle through nodes %s", i, formatIntList(cyc, 10))
			}
			return fmt.Errorf("node %d: parent %d comes after it; nodes must be listed in topological order (parent index < child index)", i, p)
		}
	}
	return nil
}

// findCycle follows parent links from node start and returns the nodes of
// the cycle it runs into, or nil when the walk reaches the root or leaves
// the node range.
func (t *Tree) findCycle(start int) []int {
	n := len(t.Nodes)
	pos := map[int]int{}
	var walk []int
	for cur := start; cur >= 0 && cur < n; cur = t.Nodes[cur].Parent {
		if at, seen := pos[cur]; seen {
			return walk[at:]
		}
		pos[cur] = len(walk)
		walk = append(walk, cur)
	}
	return nil
}

func formatIntList(xs []int, limit int) string {
	var sb strings.Builder
	for i, x := range xs {
		if i == limit {
			sb.WriteString(", ...")
			break
		}
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprint(&sb, x)
	}
	return sb.String()
}

// checkDuplicateSlots reports a slot used by two tokens. Slots are known to
// be in [0, maxSlot]. It uses a bitmap when that is smaller than sorting a
// copy of all slots.
func (t *Tree) checkDuplicateSlots(total int, maxSlot int32, bitmap *[]uint64) error {
	if maxSlot < 0 {
		return nil
	}
	var dup int32 = -1
	if bitmapBytes := int(maxSlot)/8 + 1; bitmapBytes <= 4*total+4096 {
		if bitmap == nil {
			bitmap = new([]uint64)
		}
		seen := grow(*bitmap, int(maxSlot)/64+1)
		clear(seen)
		*bitmap = seen
	scan:
		for _, nd := range t.Nodes {
			for _, s := range nd.Slots {
				w, b := s/64, uint64(1)<<(s%64)
				if seen[w]&b != 0 {
					dup = s
					break scan
				}
				seen[w] |= b
			}
		}
	} else {
		all := make([]int32, 0, total)
		for _, nd := range t.Nodes {
			all = append(all, nd.Slots...)
		}
		slices.Sort(all)
		for i := 1; i < len(all); i++ {
			if all[i] == all[i-1] {
				dup = all[i]
				break
			}
		}
	}
	if dup < 0 {
		return nil
	}
	var where []string
	for i, nd := range t.Nodes {
		for j, s := range nd.Slots {
			if s == dup && len(where) < 2 {
				where = append(where, fmt.Sprintf("node %d token %d", i, j))
			}
		}
	}
	return fmt.Errorf("slot %d is used twice (%s)", dup, strings.Join(where, " and "))
}

// SlotsAssigned reports whether every node has its Slots set (non-nil).
func (t *Tree) SlotsAssigned() bool {
	for _, nd := range t.Nodes {
		if nd.Slots == nil {
			return false
		}
	}
	return true
}

// AssignContiguousSlots gives every node whose Slots is nil consecutive
// slots, in node order, starting right after the largest slot already used
// in the tree (or at 0). It returns the number of slots the tree needs
// afterwards, NumSlots().
//
// Nodes with Tokens < 1 are skipped, and nothing is assigned when the
// unassigned nodes would exceed MaxTreeTokens tokens or slot numbers would
// overflow int32; Validate and SlotsAssigned report such trees.
func (t *Tree) AssignContiguousSlots() int {
	next := t.NumSlots()
	need := 0
	for _, nd := range t.Nodes {
		if nd.Slots == nil && nd.Tokens >= 1 {
			if nd.Tokens > MaxTreeTokens-need {
				return next
			}
			need += nd.Tokens
		}
	}
	if next > math.MaxInt32+1-need {
		return next
	}
	for i := range t.Nodes {
		nd := &t.Nodes[i]
		if nd.Slots != nil || nd.Tokens < 1 {
			continue
		}
		nd.Slots = make([]int32, nd.Tokens)
		for j := range nd.Slots {
			nd.Slots[j] = int32(next)
			next++
		}
	}
	return next
}

// NumSlots returns the largest slot used by the tree plus one (0 when no
// slots are assigned): the smallest KV pool that can hold the tree.
func (t *Tree) NumSlots() int {
	m := 0
	for _, nd := range t.Nodes {
		for _, s := range nd.Slots {
			m = max(m, int(s)+1)
		}
	}
	return m
}

// TotalTokens returns the sum of Tokens over all nodes.
func (t *Tree) TotalTokens() int {
	n := 0
	for _, nd := range t.Nodes {
		n += nd.Tokens
	}
	return n
}

// PathNodes returns the nodes from the root down to node, inclusive. It
// returns nil when node is out of range or its parent chain does not reach
// the root.
func (t *Tree) PathNodes(node int) []int {
	n := len(t.Nodes)
	var path []int
	for cur := node; ; cur = t.Nodes[cur].Parent {
		if cur < 0 || cur >= n || len(path) >= n {
			return nil
		}
		path = append(path, cur)
		if t.Nodes[cur].Parent == -1 {
			break
		}
	}
	slices.Reverse(path)
	return path
}

// Depth returns the number of edges between node and the root (0 for the
// root), or -1 when node is out of range or its parent chain is broken.
func (t *Tree) Depth(node int) int {
	return len(t.PathNodes(node)) - 1
}

// Children returns, for every node, the indices of its children in
// increasing order. Parent links outside the node range are ignored.
func (t *Tree) Children() [][]int {
	ch := make([][]int, len(t.Nodes))
	for i, nd := range t.Nodes {
		if p := nd.Parent; p >= 0 && p < len(t.Nodes) && p != i {
			ch[p] = append(ch[p], i)
		}
	}
	return ch
}

// Leaves returns the nodes without children, in increasing order.
func (t *Tree) Leaves() []int {
	hasChild := make([]bool, len(t.Nodes))
	for i, nd := range t.Nodes {
		if p := nd.Parent; p >= 0 && p < len(t.Nodes) && p != i {
			hasChild[p] = true
		}
	}
	var leaves []int
	for i, c := range hasChild {
		if !c {
			leaves = append(leaves, i)
		}
	}
	return leaves
}

// QuerySlots returns the KV slots that query q attends to: every slot of
// every strict ancestor of its node, root first, followed by slots 0..Offset
// of the node, each node's slots in token order. It returns nil when q is
// out of range, the query or its path is invalid, or a node on the path has
// no slots assigned.
func (t *Tree) QuerySlots(q int) []int32 {
	if q < 0 || q >= len(t.Queries) {
		return nil
	}
	qu := t.Queries[q]
	path := t.PathNodes(qu.Node)
	if path == nil {
		return nil
	}
	last := t.Nodes[qu.Node]
	if qu.Offset < 0 || qu.Offset >= last.Tokens || len(last.Slots) != last.Tokens {
		return nil
	}
	size := qu.Offset + 1
	for _, p := range path[:len(path)-1] {
		nd := t.Nodes[p]
		if nd.Tokens < 1 || len(nd.Slots) != nd.Tokens {
			return nil
		}
		size += nd.Tokens
	}
	out := make([]int32, 0, size)
	for _, p := range path[:len(path)-1] {
		out = append(out, t.Nodes[p].Slots...)
	}
	return append(out, last.Slots[:qu.Offset+1]...)
}

// AncestorTokens returns, for every node, the number of tokens in its strict
// ancestors, or -1 for nodes whose parent chain is not in topological order.
func (t *Tree) AncestorTokens() []int {
	anc := make([]int, len(t.Nodes))
	for i, nd := range t.Nodes {
		switch p := nd.Parent; {
		case p == -1 && i == 0:
			anc[i] = 0
		case p >= 0 && p < i && anc[p] >= 0:
			anc[i] = anc[p] + t.Nodes[p].Tokens
		default:
			anc[i] = -1
		}
	}
	return anc
}

// SumPathLengths returns the total number of (query, key) pairs of the
// tree: the sum over queries of the number of tokens each attends to, which
// for a valid tree with assigned slots is the sum of len(QuerySlots(q)). It
// is computed from the structure alone, so slots need not be assigned;
// invalid queries count 0.
func (t *Tree) SumPathLengths() int {
	anc := t.AncestorTokens()
	sum := 0
	for _, q := range t.Queries {
		if q.Node < 0 || q.Node >= len(t.Nodes) || anc[q.Node] < 0 ||
			q.Offset < 0 || q.Offset >= t.Nodes[q.Node].Tokens {
			continue
		}
		sum += anc[q.Node] + q.Offset + 1
	}
	return sum
}

// Clone returns a deep copy of t.
func (t *Tree) Clone() *Tree {
	c := &Tree{Nodes: make([]Node, len(t.Nodes)), Queries: slices.Clone(t.Queries)}
	for i, nd := range t.Nodes {
		c.Nodes[i] = Node{Parent: nd.Parent, Tokens: nd.Tokens, Slots: slices.Clone(nd.Slots)}
	}
	return c
}

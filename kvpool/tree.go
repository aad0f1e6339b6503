package kvpool

import (
	"errors"
	"fmt"
	"slices"

	"github.com/deft-vk/deft/treeattn"
)

// Query is a token position whose attention output a step computes: token
// Offset of Node. It attends to every token of Node's ancestors and to
// tokens 0..Offset of Node.
type Query struct {
	Node   *Node
	Offset int
}

// Last is the query at n's last token.
func Last(n *Node) Query { return Query{Node: n, Offset: len(n.slots) - 1} }

// Step is the attention input of one decoding step.
type Step struct {
	// Tree has one node per live pool node with tokens, in depth-first
	// order (nodes without tokens are left out; their children hang from
	// their nearest ancestor with tokens). Its Slots share memory with the
	// pool: treat them as read-only. They stay valid after later pool
	// operations, as the pool only ever appends to a node's slot list.
	Tree *treeattn.Tree
	// Nodes[i] is the pool node behind Tree.Nodes[i].
	Nodes []*Node
	// Queries[i] is the token behind Tree.Queries[i].
	Queries []Query
	// Layout names the tree's node table: it changes whenever nodes are
	// added, removed or reordered (a fork, prune, draft or accept, or a
	// sequence's first token). Two steps of the same Layout have the same
	// nodes in the same order, the later one's with tokens appended, its
	// slot lists extending the earlier one's: what
	// treeattn.Planner.PlanNext needs to re-plan only what changed.
	Layout uint64
}

// touch records that n grew; wasEmpty says it had no tokens before (which
// adds it to the tree: a structural change).
func (p *Pool) touch(n *Node, wasEmpty bool) {
	switch {
	case p.structDirty:
	case wasEmpty || n.tidx < 0:
		p.structDirty = true
	case !n.dirty:
		n.dirty = true
		p.dirty = append(p.dirty, n)
	}
}

// rebuild recomputes the cached node table by one walk over the live nodes.
func (p *Pool) rebuild() {
	p.cache, p.order, p.defaults = p.cache[:0], p.order[:0], p.defaults[:0]
	p.roots = 0
	for _, n := range p.dirty {
		n.dirty = false
	}
	p.dirty = p.dirty[:0]
	var seen map[int]bool // cache indices queried for sequences without tokens
	type frame struct {
		n      *Node
		parent int // cache index of the nearest ancestor with tokens, or -1
	}
	stack := []frame{{p.root, -1}}
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n := f.n
		p.work.treeNodes++
		idx := f.parent
		n.tidx = -1
		if len(n.slots) > 0 {
			idx = len(p.cache)
			n.tidx = idx
			p.cache = append(p.cache, treeattn.Node{Parent: f.parent, Tokens: len(n.slots), Slots: n.slots[:len(n.slots):len(n.slots)]})
			p.order = append(p.order, n)
			if f.parent < 0 {
				p.roots++
			}
		}
		switch {
		case n == p.root || idx < 0:
		case n.seq != nil || (len(n.children) == 0 && idx == n.tidx):
			p.defaults = append(p.defaults, idx)
		case len(n.children) == 0:
			// A sequence without tokens of its own: its last token is
			// its nearest ancestor's.
			if seen == nil {
				seen = map[int]bool{}
			}
			if !seen[idx] {
				seen[idx] = true
				p.defaults = append(p.defaults, idx)
			}
		}
		for i := len(n.children) - 1; i >= 0; i-- {
			stack = append(stack, frame{n.children[i], idx})
		}
	}
	p.structDirty = false
	p.layout++
}

// patch refreshes the cache entries of nodes that grew.
func (p *Pool) patch() {
	for _, n := range p.dirty {
		n.dirty = false
		if !n.live || n.tidx < 0 {
			continue
		}
		p.work.treeNodes++
		p.cache[n.tidx].Tokens = len(n.slots)
		p.cache[n.tidx].Slots = n.slots[:len(n.slots):len(n.slots)]
	}
	p.dirty = p.dirty[:0]
}

// Tree returns the attention input of a decoding step over every live
// node. With queries nil, the queries are the last token of every sequence
// (every leaf; for a leaf without tokens, its nearest ancestor's last
// token, once) and every drafted token, in depth-first order.
//
// treeattn trees have a single root, so the live nodes with tokens must
// descend from one top node: a pool holding several independent sequences
// (top-level sequences with tokens) is an error.
func (p *Pool) Tree(queries []Query) (*Step, error) {
	if p.structDirty {
		p.rebuild()
	} else {
		p.patch()
	}
	switch {
	case p.roots == 0:
		return nil, errors.New("kvpool: tree: the pool holds no tokens")
	case p.roots > 1:
		return nil, fmt.Errorf("kvpool: tree: the pool holds %d independent sequences; a tree has one root", p.roots)
	}
	var tq []treeattn.Query
	if queries == nil {
		if len(p.defaults) == 0 {
			return nil, errors.New("kvpool: tree: no queries")
		}
		tq = make([]treeattn.Query, len(p.defaults))
		queries = make([]Query, len(p.defaults))
		for i, idx := range p.defaults {
			n := p.order[idx]
			tq[i] = treeattn.Query{Node: idx, Offset: len(n.slots) - 1}
			queries[i] = Query{Node: n, Offset: len(n.slots) - 1}
		}
	} else {
		if len(queries) == 0 {
			return nil, errors.New("kvpool: tree: no queries")
		}
		tq = make([]treeattn.Query, len(queries))
		for i, q := range queries {
			if err := p.checkNode(q.Node); err != nil {
				return nil, fmt.Errorf("kvpool: tree: query %d: %w", i, err)
			}
			if q.Offset < 0 || q.Offset >= len(q.Node.slots) {
				return nil, fmt.Errorf("kvpool: tree: query %d: offset %d outside %v, which has %d tokens", i, q.Offset, q.Node, len(q.Node.slots))
			}
			tq[i] = treeattn.Query{Node: q.Node.tidx, Offset: q.Offset}
		}
		queries = slices.Clone(queries)
	}
	return &Step{
		Tree:    &treeattn.Tree{Nodes: slices.Clone(p.cache), Queries: tq},
		Nodes:   slices.Clone(p.order),
		Queries: queries,
		Layout:  p.layout,
	}, nil
}

package replay

import (
	"errors"
	"fmt"

	"github.com/deft-vk/deft/treeattn"
)

// Stats summarises a Simulator's state and history. Token counts are
// logical tokens; a KV pool multiplies them by its bytes per token and
// rounds them up to pages.
type Stats struct {
	// Steps counts the steps begun.
	Steps int
	// Queries is the total number of queries over all steps, and
	// MaxQueries the most in one step.
	Queries, MaxQueries int
	// Appended is the number of tokens appended by OpAppend, Committed the
	// number of tokens moved into a sequence by OpAccept.
	Appended, Committed int

	// Nodes and Leaves count the live nodes and the live nodes without
	// live children.
	Nodes, Leaves int
	// Tokens is the number of tokens held with prefix sharing: the sum of
	// the live nodes' own tokens, each stored once.
	Tokens int
	// UnsharedTokens is the number of tokens held without sharing: the sum
	// over live leaves of the tokens on the path from the root, as if every
	// branch kept its own copy of its context.
	UnsharedTokens int

	// PeakNodes, PeakLeaves, PeakTokens and PeakUnsharedTokens are the
	// largest values of the fields above after any op.
	PeakNodes, PeakLeaves, PeakTokens, PeakUnsharedTokens int
}

// NodeState is the logical state of one live node.
type NodeState struct {
	// Parent is the parent's id, or NoParent.
	Parent int
	// Tokens is the number of the node's own tokens.
	Tokens int
	// PathTokens is the number of tokens from the root through the node.
	PathTokens int
	// Children is the number of live children.
	Children int
}

type simNode struct {
	id       int
	parent   *simNode
	tokens   int
	path     int
	children []*simNode
	live     bool
	idx      int // position in the tree being built by Tree
}

// Simulator is a reference model of a decoding tree's logical state: every
// live node's parent, token count and children. It checks each op against
// the rules documented on OpKind and keeps Stats. The zero value is not
// usable; call NewSimulator.
type Simulator struct {
	nodes   map[int]*simNode
	order   []*simNode // creation order (topological); may hold dead nodes
	dead    int        // dead nodes in order
	roots   int
	queries []Query
	seen    map[Query]bool // Begin's duplicate-query check
	st      Stats
}

// NewSimulator returns a simulator with no nodes.
func NewSimulator() *Simulator {
	return &Simulator{nodes: map[int]*simNode{}}
}

// Stats returns the current statistics.
func (s *Simulator) Stats() Stats { return s.st }

// Node returns the state of live node id.
func (s *Simulator) Node(id int) (NodeState, bool) {
	n, ok := s.nodes[id]
	if !ok {
		return NodeState{}, false
	}
	ns := NodeState{Parent: NoParent, Tokens: n.tokens, PathTokens: n.path, Children: len(n.children)}
	if n.parent != nil {
		ns.Parent = n.parent.id
	}
	return ns, true
}

// Queries returns the current step's queries (between Begin and End).
func (s *Simulator) Queries() []Query { return s.queries }

// Apply applies one op, or returns an error and leaves the state unchanged
// when the op breaks the rules documented on OpKind.
func (s *Simulator) Apply(op Op) error {
	if err := s.apply(op); err != nil {
		return fmt.Errorf("%v: %w", op, err)
	}
	st := &s.st
	st.PeakNodes = max(st.PeakNodes, st.Nodes)
	st.PeakLeaves = max(st.PeakLeaves, st.Leaves)
	st.PeakTokens = max(st.PeakTokens, st.Tokens)
	st.PeakUnsharedTokens = max(st.PeakUnsharedTokens, st.UnsharedTokens)
	return nil
}

func (s *Simulator) live(id int) (*simNode, error) {
	n, ok := s.nodes[id]
	if !ok {
		return nil, fmt.Errorf("node %d is not live", id)
	}
	return n, nil
}

func (s *Simulator) apply(op Op) error {
	st := &s.st
	switch op.Kind {
	case OpFork:
		if _, ok := s.nodes[op.Node]; ok {
			return fmt.Errorf("node %d is already live", op.Node)
		}
		n := &simNode{id: op.Node, live: true}
		if op.Parent == NoParent {
			s.roots++
		} else {
			p, err := s.live(op.Parent)
			if err != nil {
				return fmt.Errorf("parent: %w", err)
			}
			if len(p.children) == 0 {
				st.Leaves--
				st.UnsharedTokens -= p.path
			}
			p.children = append(p.children, n)
			n.parent, n.path = p, p.path
		}
		s.nodes[op.Node] = n
		s.order = append(s.order, n)
		st.Nodes++
		st.Leaves++
		st.UnsharedTokens += n.path
	case OpAppend:
		n, err := s.live(op.Node)
		if err != nil {
			return err
		}
		switch {
		case op.Tokens < 1:
			return fmt.Errorf("appends %d tokens, want at least 1", op.Tokens)
		case op.Tokens > treeattn.MaxTreeTokens-st.Tokens:
			return fmt.Errorf("would hold more than %d tokens", treeattn.MaxTreeTokens)
		case len(n.children) > 0:
			return fmt.Errorf("node %d has %d live children; only a node without children grows", op.Node, len(n.children))
		}
		n.tokens += op.Tokens
		n.path += op.Tokens
		st.Tokens += op.Tokens
		st.UnsharedTokens += op.Tokens
		st.Appended += op.Tokens
	case OpPrune:
		n, err := s.live(op.Node)
		if err != nil {
			return err
		}
		if len(n.children) > 0 {
			return fmt.Errorf("node %d has %d live children; prune them first", op.Node, len(n.children))
		}
		s.remove(n)
		if p := n.parent; p != nil {
			for i, c := range p.children {
				if c == n {
					p.children = append(p.children[:i], p.children[i+1:]...)
					break
				}
			}
			if len(p.children) == 0 {
				st.Leaves++
				st.UnsharedTokens += p.path
			}
		}
	case OpAccept:
		n, err := s.live(op.Node)
		if err != nil {
			return err
		}
		if len(op.Path) == 0 {
			return errors.New("empty path")
		}
		sum := 0
		for i, id := range op.Path {
			c, err := s.live(id)
			if err != nil {
				return fmt.Errorf("path[%d]: %w", i, err)
			}
			want := n
			if i > 0 {
				want = s.nodes[op.Path[i-1]]
			}
			if c.parent != want {
				return fmt.Errorf("path[%d]: node %d is not a child of node %d", i, id, want.id)
			}
			sum += c.tokens
		}
		if sum != op.Tokens {
			return fmt.Errorf("the path holds %d tokens, not %d", sum, op.Tokens)
		}
		var drop func(*simNode)
		drop = func(d *simNode) {
			for _, c := range d.children {
				drop(c)
			}
			s.remove(d)
			d.children = nil
		}
		for _, c := range n.children {
			drop(c)
		}
		n.children = nil
		n.tokens += sum
		n.path += sum
		st.Leaves++
		st.Tokens += sum
		st.UnsharedTokens += n.path
		st.Committed += sum
	default:
		return fmt.Errorf("unknown op kind %d", op.Kind)
	}
	return nil
}

// remove takes live node n out of the counts; its children, if any, are
// being removed too, so only a node without children counts as a leaf.
func (s *Simulator) remove(n *simNode) {
	st := &s.st
	delete(s.nodes, n.id)
	n.live = false
	s.dead++
	if n.parent == nil {
		s.roots--
	}
	st.Nodes--
	st.Tokens -= n.tokens
	if len(n.children) == 0 {
		st.Leaves--
		st.UnsharedTokens -= n.path
	}
}

// Begin applies a step's Ops and makes its Queries current: each must name
// a live node and an offset within its tokens, and no position may repeat.
func (s *Simulator) Begin(st Step) error {
	for _, op := range st.Ops {
		if err := s.Apply(op); err != nil {
			return fmt.Errorf("step %d: %w", st.Index, err)
		}
	}
	if len(st.Queries) == 0 {
		return fmt.Errorf("step %d: no queries", st.Index)
	}
	if s.seen == nil {
		s.seen = map[Query]bool{}
	}
	seen := s.seen
	clear(seen)
	for i, q := range st.Queries {
		n, ok := s.nodes[q.Node]
		switch {
		case !ok:
			return fmt.Errorf("step %d: query %d: node %d is not live", st.Index, i, q.Node)
		case q.Offset < 0 || q.Offset >= n.tokens:
			return fmt.Errorf("step %d: query %d: offset %d outside node %d, which has %d tokens", st.Index, i, q.Offset, q.Node, n.tokens)
		case seen[q]:
			return fmt.Errorf("step %d: query %d: node %d offset %d is queried twice", st.Index, i, q.Node, q.Offset)
		}
		seen[q] = true
	}
	s.queries = append(s.queries[:0], st.Queries...)
	s.st.Steps++
	s.st.Queries += len(st.Queries)
	s.st.MaxQueries = max(s.st.MaxQueries, len(st.Queries))
	return nil
}

// End applies a step's After ops and clears the current queries.
func (s *Simulator) End(st Step) error {
	s.queries = s.queries[:0]
	for _, op := range st.After {
		if err := s.Apply(op); err != nil {
			return fmt.Errorf("step %d (after): %w", st.Index, err)
		}
	}
	return nil
}

// Tree returns the attention tree of the current step (between Begin and
// End): every live node, in creation order (so parents come first), with
// its tokens, contiguous slots assigned in node order
// (treeattn.Tree.AssignContiguousSlots), and the step's queries in step
// order. Slots are numbered afresh on every call, so they are stable across
// steps only while no node before them grows or goes; a KV pool assigns
// its own. Tree builds the whole tree, in time proportional to the live
// tokens. It fails when there are no queries, when the live nodes do not
// form one tree, or when a live node has no tokens.
func (s *Simulator) Tree() (*treeattn.Tree, error) {
	if len(s.queries) == 0 {
		return nil, errors.New("simulator tree: no queries (call Begin first)")
	}
	if s.roots != 1 {
		return nil, fmt.Errorf("simulator tree: %d root sequences, want 1", s.roots)
	}
	if s.dead > len(s.order)/2 {
		live := s.order[:0]
		for _, n := range s.order {
			if n.live {
				live = append(live, n)
			}
		}
		clear(s.order[len(live):])
		s.order, s.dead = live, 0
	}
	t := &treeattn.Tree{
		Nodes:   make([]treeattn.Node, 0, s.st.Nodes),
		Queries: make([]treeattn.Query, len(s.queries)),
	}
	for _, n := range s.order {
		if !n.live {
			continue
		}
		if n.tokens == 0 {
			return nil, fmt.Errorf("simulator tree: node %d has no tokens", n.id)
		}
		parent := -1
		if n.parent != nil {
			parent = n.parent.idx
		}
		n.idx = len(t.Nodes)
		t.Nodes = append(t.Nodes, treeattn.Node{Parent: parent, Tokens: n.tokens})
	}
	for i, q := range s.queries {
		n, ok := s.nodes[q.Node]
		if !ok || q.Offset >= n.tokens {
			return nil, fmt.Errorf("simulator tree: query %d (node %d offset %d) is no longer valid", i, q.Node, q.Offset)
		}
		t.Queries[i] = treeattn.Query{Node: n.idx, Offset: q.Offset}
	}
	t.AssignContiguousSlots()
	return t, nil
}

// Run replays w on a new Simulator: for every step it calls Begin, then
// visit (when not nil; it may call Tree), then End. It returns the
// simulator and the first error, naming the workload.
func Run(w Workload, visit func(st Step, sim *Simulator) error) (*Simulator, error) {
	sim := NewSimulator()
	for st := range Steps(w) {
		if err := sim.Begin(st); err != nil {
			return sim, fmt.Errorf("replay %s: %w", w.Name(), err)
		}
		if visit != nil {
			if err := visit(st, sim); err != nil {
				return sim, fmt.Errorf("replay %s: step %d: %w", w.Name(), st.Index, err)
			}
		}
		if err := sim.End(st); err != nil {
			return sim, fmt.Errorf("replay %s: %w", w.Name(), err)
		}
	}
	return sim, nil
}

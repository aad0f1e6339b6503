package kvpool

import (
	"errors"
	"fmt"
)

// ErrPoolFull is reported (through *FullError) when an operation needs more
// free pages than the pool has. The pool is unchanged: prune and retry.
var ErrPoolFull = errors.New("KV pool full")

// ErrPruned is reported when an operation names a node that was pruned
// (or merged into its sequence by Accept).
var ErrPruned = errors.New("node was pruned")

// FullError says how many pages a failed operation needed. errors.Is(err,
// ErrPoolFull) holds for it.
type FullError struct {
	Op         string // the failed operation, e.g. "append 40 tokens to node 3"
	Need, Free int    // pages needed and pages free
}

func (e *FullError) Error() string {
	return fmt.Sprintf("kvpool: %s: %v: need %d free pages, %d free (prune and retry)", e.Op, ErrPoolFull, e.Need, e.Free)
}

// Is makes errors.Is(err, ErrPoolFull) true.
func (e *FullError) Is(target error) bool { return target == ErrPoolFull }

// page is one page of PageTokens consecutive slots.
type page struct {
	// refs counts the live tokens held in the page plus one while owner
	// is set: the page is free exactly when refs is 0.
	refs int32
	// used is the allocation mark: slots [0, used) were handed out since
	// the page was taken from the free list. Slots below used whose
	// tokens were pruned stay dead until the page is freed (or, for the
	// owner's token tree, until the tree is resolved).
	used int32
	// owner is the node allowed to allocate slots [used, PageTokens): a
	// sequence's tail page, or a page reserved for its drafted token tree.
	owner *Node
}

// Node is a node of the pool's sequence tree: a run of tokens whose context
// is the tokens of its ancestors. A sequence's handle is the node at its
// end. Nodes are created by NewSequence, Fork and Draft and stay valid until
// pruned. A Node is only usable with the pool that created it.
type Node struct {
	p        *Pool
	id       int
	parent   *Node   // the pool's hidden root for top-level sequences
	children []*Node // live children in creation order
	slots    []int32 // the node's own tokens; append-only while the node lives
	pages    []int32 // pages of slots in order of first use (each once)
	base     int     // tokens of the strict ancestors; fixed, as a node with children never grows
	tail     int32   // page this node appends into (owned by it), or -1
	region   *region // token tree drafted under this node, nil when none
	seq      *Node   // draft nodes: the node whose token tree they belong to
	pos      int     // draft nodes: position in seq.region
	live     bool

	tidx  int  // index in the pool's cached treeattn tree, -1 when not in it
	dirty bool // queued in Pool.dirty
	scr   int  // scratch for Stats
}

// region is a drafted token tree's run of slots: it continues the owner's
// tail page (when it has room) and goes on over pages reserved for it.
// Position i is slot pages[(start+i)/PT]*PT + (start+i)%PT.
type region struct {
	pages []int32
	start int // offset of position 0 in pages[0]
}

func (p *Pool) regionSlot(r *region, i int) int32 {
	off := r.start + i
	return r.pages[off/p.pageTokens]*int32(p.pageTokens) + int32(off%p.pageTokens)
}

// ID is a number unique among the pool's nodes, for logs.
func (n *Node) ID() int { return n.id }

// Live reports whether the node has not been pruned.
func (n *Node) Live() bool { return n.live }

// Parent is the node's parent, or nil for a top-level sequence.
func (n *Node) Parent() *Node {
	if n.parent == nil || n.parent == n.p.root {
		return nil
	}
	return n.parent
}

// Children returns the node's live children in creation order.
func (n *Node) Children() []*Node { return append([]*Node(nil), n.children...) }

// Tokens is the number of the node's own tokens.
func (n *Node) Tokens() int { return len(n.slots) }

// Len is the length of the sequence ending at the node: its ancestors'
// tokens plus its own.
func (n *Node) Len() int { return n.base + len(n.slots) }

// Slots returns the KV slots of the node's own tokens, in order.
func (n *Node) Slots() []int32 { return append([]int32(nil), n.slots...) }

// IsDraft reports whether the node is a token of a drafted token tree
// (see Pool.Draft).
func (n *Node) IsDraft() bool { return n.seq != nil }

func (n *Node) String() string {
	if n == nil {
		return "nil node"
	}
	return fmt.Sprintf("node %d", n.id)
}

// checkNode validates a node argument.
func (p *Pool) checkNode(n *Node) error {
	switch {
	case n == nil:
		return errors.New("nil node")
	case n.p != p:
		return fmt.Errorf("%v belongs to another pool", n)
	case !n.live:
		return fmt.Errorf("%v: %w", n, ErrPruned)
	case n == p.root:
		return errors.New("the pool's root is not a sequence")
	}
	return nil
}

func (p *Pool) newNode(parent *Node) *Node {
	p.nextID++
	n := &Node{p: p, id: p.nextID, parent: parent, tail: -1, live: true, tidx: -1}
	if parent != nil {
		n.base = parent.base + len(parent.slots)
		parent.children = append(parent.children, n)
		p.nodes++
	}
	p.structDirty = true
	return n
}

// takePage moves a page from the free list to owner.
func (p *Pool) takePage(owner *Node) int32 {
	pg := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	p.pages[pg] = page{refs: 1, owner: owner}
	return pg
}

// unref drops k references from page pg and frees it when none remain.
func (p *Pool) unref(pg int32, k int32) {
	pp := &p.pages[pg]
	pp.refs -= k
	if pp.refs < 0 {
		panic(fmt.Sprintf("kvpool: page %d reference count %d", pg, pp.refs))
	}
	if pp.refs == 0 {
		*pp = page{}
		p.free = append(p.free, pg)
	}
}

// disown ends n's ownership of page pg, if it has it.
func (p *Pool) disown(pg int32, n *Node) {
	if pg >= 0 && p.pages[pg].owner == n {
		p.pages[pg].owner = nil
		p.unref(pg, 1)
	}
}

// addSlot gives n the next token, stored at slot.
func (p *Pool) addSlot(n *Node, slot int32) {
	pg := slot / int32(p.pageTokens)
	n.slots = append(n.slots, slot)
	if len(n.pages) == 0 || n.pages[len(n.pages)-1] != pg {
		n.pages = append(n.pages, pg)
	}
	p.pages[pg].refs++
	p.tokens++
}

// room is the number of free slots in n's tail page.
func (p *Pool) room(n *Node) int {
	if n.tail < 0 {
		return 0
	}
	return p.pageTokens - int(p.pages[n.tail].used)
}

// pagesFor is the number of fresh pages k tokens need after room free slots.
func (p *Pool) pagesFor(room, k int) int {
	if k <= room {
		return 0
	}
	return (k - room + p.pageTokens - 1) / p.pageTokens
}

// fits reports whether k tokens fit the pool at all (guards overflow).
func (p *Pool) fits(k int) bool { return k <= p.numPages*p.pageTokens }

// grow appends k tokens to n: its tail page first, then fresh pages it
// owns. The caller has checked that enough pages are free.
func (p *Pool) grow(n *Node, k int) []int32 {
	out := make([]int32, 0, k)
	for len(out) < k {
		if p.room(n) == 0 {
			old := n.tail
			n.tail = p.takePage(n)
			p.disown(old, n)
		}
		pg := &p.pages[n.tail]
		take := min(k-len(out), p.pageTokens-int(pg.used))
		first := n.tail*int32(p.pageTokens) + pg.used
		for i := range int32(take) {
			out = append(out, first+i)
			p.addSlot(n, first+i)
		}
		pg.used += int32(take)
	}
	return out
}

// NewSequence starts a new top-level sequence without tokens.
func (p *Pool) NewSequence() *Node { return p.newNode(p.root) }

// Fork starts a branch of n: a child that shares all of n's tokens without
// copying them and has none of its own yet. n keeps its tokens and cannot
// grow while it has children (its later tokens would be visible to them);
// a sequence that goes on alongside its branches forks itself too.
//
// The child starts on a fresh page when it appends, so no page is ever
// written by two branches and forking copies nothing; the free slots of n's
// last page stay reserved for n (used again once its children are gone).
// The cost is at most PageTokens-1 unused slots per node with children.
func (p *Pool) Fork(n *Node) (*Node, error) {
	if err := p.checkNode(n); err != nil {
		return nil, fmt.Errorf("kvpool: fork: %w", err)
	}
	if n.seq != nil {
		return nil, fmt.Errorf("kvpool: fork %v: it is a drafted token (Accept or Prune the token tree)", n)
	}
	if n.region != nil {
		return nil, fmt.Errorf("kvpool: fork %v: it has a drafted token tree (Accept or Prune it first)", n)
	}
	return p.newNode(n), nil
}

// Append allocates slots for k new tokens at the end of n and returns them
// in token order, for the layers to write the tokens' K/V into (Write).
// n must have no children. On *FullError (errors.Is ErrPoolFull) nothing
// changed.
func (p *Pool) Append(n *Node, k int) ([]int32, error) {
	op := func() string { return fmt.Sprintf("append %d tokens to %v", k, n) } // only on errors: Append is hot
	if err := p.checkNode(n); err != nil {
		return nil, fmt.Errorf("kvpool: %s: %w", op(), err)
	}
	switch {
	case k < 0:
		return nil, fmt.Errorf("kvpool: %s: negative count", op())
	case n.seq != nil:
		return nil, fmt.Errorf("kvpool: %s: it is a drafted token; Accept moves drafted tokens into their sequence", op())
	case len(n.children) > 0:
		return nil, fmt.Errorf("kvpool: %s: it has %d children, which would see the new tokens; fork a branch for them", op(), len(n.children))
	case k == 0:
		return []int32{}, nil
	}
	room := p.room(n)
	if !p.fits(k) {
		return nil, &FullError{Op: op(), Need: p.numPages + 1, Free: len(p.free)}
	}
	if need := p.pagesFor(room, k); need > len(p.free) {
		return nil, &FullError{Op: op(), Need: need, Free: len(p.free)}
	}
	wasEmpty := len(n.slots) == 0
	out := p.grow(n, k)
	p.touch(n, wasEmpty)
	return out, nil
}

// Draft adds a token tree for speculative decoding under n, which must have
// no children: one 1-token draft node per entry of parents, where
// parents[i] is -1 for a child of n or the index j < i of an earlier draft
// token. It returns the draft nodes and their slots (for Write).
//
// The drafted tokens take consecutive slots right after n's last token
// (the rest of n's tail page, then reserved pages), in the given order, so
// the whole tree costs ceil(len/PageTokens) pages at most and Accept of a
// path that is already in place (the chain 0, 1, 2, ... of first children,
// in depth-first order) moves nothing. Draft nodes cannot be forked or
// appended to; Accept resolves the tree, Prune drops parts of it. On
// *FullError nothing changed.
func (p *Pool) Draft(n *Node, parents []int) ([]*Node, []int32, error) {
	op := fmt.Sprintf("draft %d tokens under %v", len(parents), n)
	if err := p.checkNode(n); err != nil {
		return nil, nil, fmt.Errorf("kvpool: %s: %w", op, err)
	}
	switch {
	case len(parents) == 0:
		return nil, nil, fmt.Errorf("kvpool: %s: empty token tree", op)
	case n.seq != nil:
		return nil, nil, fmt.Errorf("kvpool: %s: it is itself a drafted token", op)
	case len(n.children) > 0:
		return nil, nil, fmt.Errorf("kvpool: %s: it has %d children (a token tree hangs under a node without children)", op, len(n.children))
	}
	for i, par := range parents {
		if par < -1 || par >= i {
			return nil, nil, fmt.Errorf("kvpool: %s: parents[%d] = %d, want -1 or an earlier token (0..%d)", op, i, par, i-1)
		}
	}
	m := len(parents)
	room := p.room(n)
	if !p.fits(m) {
		return nil, nil, &FullError{Op: op, Need: p.numPages + 1, Free: len(p.free)}
	}
	need := p.pagesFor(room, m)
	if need > len(p.free) {
		return nil, nil, &FullError{Op: op, Need: need, Free: len(p.free)}
	}
	r := &region{}
	if room > 0 {
		r.pages = append(r.pages, n.tail)
		r.start = int(p.pages[n.tail].used)
	}
	for range need {
		r.pages = append(r.pages, p.takePage(n))
	}
	n.region = r
	nodes := make([]*Node, m)
	slots := make([]int32, m)
	for i, par := range parents {
		parent := n
		if par >= 0 {
			parent = nodes[par]
		}
		d := p.newNode(parent)
		d.seq, d.pos = n, i
		slot := p.regionSlot(r, i)
		p.addSlot(d, slot)
		p.pages[slot/int32(p.pageTokens)].used = slot%int32(p.pageTokens) + 1
		nodes[i], slots[i] = d, slot
	}
	return nodes, slots, nil
}

// finishRegion resolves n's token tree once its draft nodes are gone: the
// first m positions now hold n's accepted tokens (m may be 0); the page of
// the last of them becomes n's tail page with the later slots free again,
// and the other reserved pages are released.
func (p *Pool) finishRegion(n *Node, m int) {
	r := n.region
	n.region = nil
	last := -1
	if m > 0 {
		last = (r.start + m - 1) / p.pageTokens
	}
	for i, pg := range r.pages {
		switch {
		case i == last:
			if n.tail != pg {
				p.disown(n.tail, n)
				n.tail = pg
			}
			p.pages[pg].used = int32((r.start+m-1)%p.pageTokens + 1)
		case last < 0 && pg == n.tail:
			// The tree started in n's tail page: hand the slots after
			// n's last token back to n.
			p.pages[pg].used = n.slots[len(n.slots)-1]%int32(p.pageTokens) + 1
		default:
			p.disown(pg, n)
		}
	}
}

// Prune releases n and everything below it (its whole subtree): their
// tokens are dropped and pages no longer referenced return to the free
// list, to be reused by later allocations. Pruning a draft node drops that
// part of its token tree; once a token tree is entirely gone, the slots it
// took in its sequence's tail page are handed back.
func (p *Pool) Prune(n *Node) error {
	if err := p.checkNode(n); err != nil {
		return fmt.Errorf("kvpool: prune: %w", err)
	}
	p.prune(n)
	return nil
}

func (p *Pool) prune(n *Node) {
	stack := []*Node{n}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = append(stack[:len(stack)-1], x.children...)
		p.release(x)
	}
	parent := n.parent
	for i, c := range parent.children {
		if c == n {
			parent.children = append(parent.children[:i], parent.children[i+1:]...)
			break
		}
	}
	if parent.region != nil && len(parent.children) == 0 {
		p.finishRegion(parent, 0)
	}
	p.structDirty = true
}

// release drops one node's tokens and page ownerships (not its children).
func (p *Pool) release(x *Node) {
	for i := 0; i < len(x.slots); {
		pg := x.slots[i] / int32(p.pageTokens)
		j := i + 1
		for j < len(x.slots) && x.slots[j]/int32(p.pageTokens) == pg {
			j++
		}
		p.unref(pg, int32(j-i))
		i = j
	}
	p.tokens -= len(x.slots)
	p.disown(x.tail, x)
	if x.region != nil {
		for _, pg := range x.region.pages {
			p.disown(pg, x)
		}
		x.region = nil
	}
	x.live = false
	x.children = nil
	x.tail = -1
	p.nodes--
}

// planAccept validates Accept's arguments without changing anything. It
// returns the (from, to) slot moves, in the order they must be applied, and
// the number of accepted tokens.
func (p *Pool) planAccept(op string, n *Node, path []*Node) (moves [][2]int32, m int, err error) {
	if err := p.checkNode(n); err != nil {
		return nil, 0, err
	}
	if n.seq != nil {
		return nil, 0, fmt.Errorf("%v is a drafted token, not a sequence", n)
	}
	prev := n
	for i, d := range path {
		if err := p.checkNode(d); err != nil {
			return nil, 0, fmt.Errorf("path[%d]: %w", i, err)
		}
		if d.parent != prev {
			return nil, 0, fmt.Errorf("path[%d] (%v) is not a child of %v", i, d, prev)
		}
		m += len(d.slots)
		prev = d
	}
	if r := n.region; r != nil {
		// Draft nodes: token i goes to position i of the region. Each
		// draft node is created after its parent, so path[i].pos >= i and
		// moving in path order never overwrites a source still to be
		// read (the move kernel relies on it).
		for i, d := range path {
			if d.pos != i {
				moves = append(moves, [2]int32{d.slots[0], p.regionSlot(r, i)})
			}
		}
		return moves, m, nil
	}
	// Ordinary nodes (Fork and Append): their tokens are copied to n's
	// continuation, which lies in n's tail page and in fresh pages, apart
	// from every source.
	if m == 0 {
		return nil, 0, nil
	}
	if !p.fits(m) {
		return nil, m, &FullError{Op: op, Need: p.numPages + 1, Free: len(p.free)}
	}
	if need := p.pagesFor(p.room(n), m); need > len(p.free) {
		return nil, m, &FullError{Op: op, Need: need, Free: len(p.free)}
	}
	to := p.peekGrow(n, m)
	k := 0
	for _, d := range path {
		for _, s := range d.slots {
			moves = append(moves, [2]int32{s, to[k]})
			k++
		}
	}
	return moves, m, nil
}

// peekGrow returns the slots grow(n, k) would hand out, without changing
// anything.
func (p *Pool) peekGrow(n *Node, k int) []int32 {
	out := make([]int32, 0, k)
	pt := int32(p.pageTokens)
	if n.tail >= 0 {
		for s := p.pages[n.tail].used; s < pt && len(out) < k; s++ {
			out = append(out, n.tail*pt+s)
		}
	}
	for i := len(p.free) - 1; len(out) < k; i-- {
		for s := int32(0); s < pt && len(out) < k; s++ {
			out = append(out, p.free[i]*pt+s)
		}
	}
	return out
}

// commitAccept applies a planned Accept.
func (p *Pool) commitAccept(n *Node, m int) []int32 {
	var out []int32
	if r := n.region; r != nil {
		n.region = nil // pruning the drafts must not release the region
		out = make([]int32, m)
		for i := range out {
			out[i] = p.regionSlot(r, i)
			p.addSlot(n, out[i])
		}
		for len(n.children) > 0 {
			p.prune(n.children[0])
		}
		n.region = r
		p.finishRegion(n, m)
	} else {
		out = p.grow(n, m)
		for len(n.children) > 0 {
			p.prune(n.children[0])
		}
	}
	p.structDirty = true
	return out
}

package generate

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/replay"
)

// TreeShape is the template of the token trees a drafter proposes: node i
// is the Ranks[i]-th candidate (0: the drafter's best) after its parent,
// where Parents[i] is -1 for a child of the root (the last accepted token)
// or an earlier node. A drafter fills the nodes it has candidates for; a
// node without one is left out with its subtree.
type TreeShape struct {
	Parents []int
	Ranks   []int
}

// Limits of a TreeShape.
const (
	MaxTreeNodes = 4096 // drafted tokens per step
	MaxTreeRank  = 1024 // candidates per node
)

// WidthDepthShape is the tree of width first-level candidates (ranks 0 to
// width-1) under the root, each followed by a chain of best candidates
// (rank 0) down to depth: width*depth nodes, listed depth-first so that the
// accepted tokens of the best chain stay in place (kvpool.Accept moves
// nothing for it).
func WidthDepthShape(width, depth int) (TreeShape, error) {
	if width < 1 || depth < 1 || width*depth > MaxTreeNodes || width > MaxTreeRank {
		return TreeShape{}, fmt.Errorf("generate: tree of width %d and depth %d: want both >= 1, width <= %d and at most %d nodes",
			width, depth, MaxTreeRank, MaxTreeNodes)
	}
	var s TreeShape
	for w := range width {
		s.Parents = append(s.Parents, -1)
		s.Ranks = append(s.Ranks, w)
		for range depth - 1 {
			s.Parents = append(s.Parents, len(s.Parents)-1)
			s.Ranks = append(s.Ranks, 0)
		}
	}
	return s, nil
}

// ShapeFromSpecTree is the shape of one of DeFT's Medusa-style token-tree
// files (replay.ParseSpeculativeJSON): path [a, b, c] is the c-th best
// candidate after the a-th best first token and its b-th best successor,
// so its rank is its last entry. Token 0, the implicit root, is the root.
func ShapeFromSpecTree(st *replay.SpecTree) (TreeShape, error) {
	n := len(st.Paths)
	s := TreeShape{Parents: make([]int, n), Ranks: make([]int, n)}
	for i, p := range st.Paths {
		s.Parents[i] = st.Parents[i+1] - 1
		s.Ranks[i] = p[len(p)-1]
	}
	if err := s.Check(); err != nil {
		return TreeShape{}, err
	}
	return s, nil
}

// Check validates a shape: parents earlier, ranks in range and distinct
// among siblings, within the limits.
func (s TreeShape) Check() error {
	switch {
	case len(s.Parents) != len(s.Ranks):
		return fmt.Errorf("generate: tree shape: %d parents, %d ranks", len(s.Parents), len(s.Ranks))
	case len(s.Parents) > MaxTreeNodes:
		return fmt.Errorf("generate: tree shape of %d nodes: at most %d", len(s.Parents), MaxTreeNodes)
	}
	type sib struct{ parent, rank int }
	seen := map[sib]bool{}
	for i, p := range s.Parents {
		r := s.Ranks[i]
		switch {
		case p < -1 || p >= i:
			return fmt.Errorf("generate: tree shape: node %d has parent %d, want -1 or an earlier node", i, p)
		case r < 0 || r >= MaxTreeRank:
			return fmt.Errorf("generate: tree shape: node %d has rank %d outside [0, %d)", i, r, MaxTreeRank)
		case seen[sib{p, r}]:
			return fmt.Errorf("generate: tree shape: node %d repeats rank %d under parent %d", i, r, p)
		}
		seen[sib{p, r}] = true
	}
	return nil
}

// Depth is the longest path of the shape (0 for an empty shape).
func (s TreeShape) Depth() int {
	d := make([]int, len(s.Parents))
	most := 0
	for i, p := range s.Parents {
		d[i] = 1
		if p >= 0 {
			d[i] = d[p] + 1
		}
		most = max(most, d[i])
	}
	return most
}

// DraftTree is a drafted token tree under the root (the last accepted
// token): Parents[i] is -1 or an earlier token, and siblings are distinct
// tokens listed best candidate first.
type DraftTree struct {
	Parents []int
	Tokens  []int32
}

// Len is the number of drafted tokens.
func (t DraftTree) Len() int { return len(t.Tokens) }

// Drafter proposes the token trees of speculative decoding.
type Drafter interface {
	// Draft returns a token tree after ctx, the prompt and every accepted
	// token; the last of them is the tree's root, which the target has not
	// evaluated yet. The tree fills part of shape, at most maxDepth deep
	// (maxDepth 0: an empty tree). Successive calls of one generation
	// pass ctx grown by the tokens accepted in between.
	Draft(ctx []int32, shape TreeShape, maxDepth int) (DraftTree, error)
}

// fillShape drafts shape level by level: expand returns the ranked
// candidates of each given node of the tree so far (-1: the root), at
// least k of them when it has that many. A node whose parent has fewer
// candidates than its rank is left out with its subtree. The tree lists
// nodes level by level, each node's children in shape order.
func fillShape(shape TreeShape, maxDepth int, expand func(t *DraftTree, nodes []int, k int) ([][]int32, error)) (DraftTree, error) {
	var t DraftTree
	children := make(map[int][]int, len(shape.Parents)) // shape node -> shape children
	depth := make([]int, len(shape.Parents))
	for i, p := range shape.Parents {
		depth[i] = 1
		if p >= 0 {
			depth[i] = depth[p] + 1
		}
		if depth[i] <= maxDepth {
			children[p] = append(children[p], i)
		}
	}
	// frontier: shape nodes (-1: root) that were drafted, with their tree index.
	type placed struct{ shape, tree int }
	frontier := []placed{{-1, -1}}
	for len(frontier) > 0 {
		var need []placed
		k := 0
		for _, f := range frontier {
			if cs := children[f.shape]; len(cs) > 0 {
				need = append(need, f)
				for _, c := range cs {
					k = max(k, shape.Ranks[c]+1)
				}
			}
		}
		if len(need) == 0 {
			break
		}
		nodes := make([]int, len(need))
		for i, f := range need {
			nodes[i] = f.tree
		}
		cands, err := expand(&t, nodes, k)
		if err != nil {
			return DraftTree{}, err
		}
		frontier = frontier[:0:0]
		for i, f := range need {
			for _, c := range children[f.shape] {
				if r := shape.Ranks[c]; r < len(cands[i]) {
					t.Parents = append(t.Parents, f.tree)
					t.Tokens = append(t.Tokens, cands[i][r])
					frontier = append(frontier, placed{c, len(t.Tokens) - 1})
				}
			}
		}
	}
	return t, nil
}

// LookupDrafter drafts by prompt lookup: no second model. It finds the
// last n-gram of the context (n = MaxN down to 1, the longest that
// occurs) earlier in the context and proposes what followed each
// occurrence, most recent first: the occurrences form a trie whose
// branches are ranked by how many occurrences share them (ties: the most
// recent first), so several matches give several branches.
type LookupDrafter struct {
	MaxN       int // longest n-gram looked up (0: 3)
	MaxMatches int // occurrences used at most, the most recent (0: 64)
}

// trieNode is a node of the trie of continuations.
type trieNode struct {
	tok      int32
	count    int
	order    int // index of the first continuation through it
	children []*trieNode
}

func (n *trieNode) child(tok int32) *trieNode {
	for _, c := range n.children {
		if c.tok == tok {
			return c
		}
	}
	return nil
}

// ranked returns the children best first.
func (n *trieNode) ranked() []*trieNode {
	cs := slices.Clone(n.children)
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].count != cs[j].count {
			return cs[i].count > cs[j].count
		}
		return cs[i].order < cs[j].order
	})
	return cs
}

// Draft implements Drafter.
func (d *LookupDrafter) Draft(ctx []int32, shape TreeShape, maxDepth int) (DraftTree, error) {
	maxN, maxMatches := d.MaxN, d.MaxMatches
	if maxN <= 0 {
		maxN = 3
	}
	if maxMatches <= 0 {
		maxMatches = 64
	}
	root := &trieNode{}
	if maxDepth > 0 {
		for n := min(maxN, len(ctx)-1); n >= 1 && len(root.children) == 0; n-- {
			suffix := ctx[len(ctx)-n:]
			matches := 0
			// An occurrence must end before the suffix starts to have a
			// continuation (it may overlap the suffix).
			for i := len(ctx) - n - 1; i >= 0 && matches < maxMatches; i-- {
				if !slices.Equal(ctx[i:i+n], suffix) {
					continue
				}
				node := root
				for _, tok := range ctx[i+n : min(i+n+maxDepth, len(ctx))] {
					c := node.child(tok)
					if c == nil {
						c = &trieNode{tok: tok, order: matches}
						node.children = append(node.children, c)
					}
					c.count++
					node = c
				}
				matches++
			}
		}
	}
	at := map[int]*trieNode{-1: root} // tree index -> trie node
	return fillShape(shape, maxDepth, func(t *DraftTree, nodes []int, _ int) ([][]int32, error) {
		out := make([][]int32, len(nodes))
		for i, x := range nodes {
			n, ok := at[x]
			if !ok { // parents are placed a level earlier
				n = at[t.Parents[x]].child(t.Tokens[x])
				at[x] = n
			}
			for _, c := range n.ranked() {
				out[i] = append(out[i], c.tok)
			}
		}
		return out, nil
	})
}

// ModelDrafter drafts with a second, smaller model: each tree level is one
// forward pass of the draft model over the level's nodes that have
// children in the shape, whose top candidates (by logit) fill the next
// level. It keeps its own pool in sync with the accepted tokens: the
// context a Draft call has not seen yet (the tokens accepted since the
// last call, and the new root) is evaluated in one pass before drafting,
// and the drafted branches are pruned afterwards. Forked draft branches
// start on fresh pages, so the pool needs the context plus a page per
// first-level candidate and per node with several children
// (ModelDrafterBudget).
type ModelDrafter struct {
	m    *model.Model
	pool *kvpool.Pool
	seq  *kvpool.Node // the context evaluated so far
	ctx  []int32      // its tokens
}

// NewModelDrafter drafts with m in pool.
func NewModelDrafter(m *model.Model, pool *kvpool.Pool) *ModelDrafter {
	return &ModelDrafter{m: m, pool: pool}
}

// ModelDrafterBudget is the pool size in tokens a ModelDrafter needs for a
// context of ctx tokens and trees of shape.
func ModelDrafterBudget(ctx int, shape TreeShape, pageTokens int) int {
	return pageRound(ctx, pageTokens) + pageTokens*(len(shape.Parents)+1)
}

// Close releases the drafter's tokens in its pool.
func (d *ModelDrafter) Close() {
	if d.seq != nil {
		d.pool.Prune(d.seq)
		d.seq, d.ctx = nil, nil
	}
}

// Draft implements Drafter.
func (d *ModelDrafter) Draft(ctx []int32, shape TreeShape, maxDepth int) (DraftTree, error) {
	if len(ctx) == 0 {
		return DraftTree{}, errors.New("generate: draft: empty context")
	}
	// Start again when ctx does not continue what the pool holds (a new
	// generation).
	if d.seq != nil && (len(ctx) <= len(d.ctx) || !slices.Equal(ctx[:len(d.ctx)], d.ctx)) {
		d.Close()
	}
	if d.seq == nil {
		d.seq = d.pool.NewSequence()
	}
	if c := d.m.Config().ContextLen; c > 0 {
		maxDepth = min(maxDepth, c-len(ctx)) // the draft model's positions stay in its context
	}
	if maxDepth <= 0 {
		return DraftTree{}, nil
	}
	rootLogits, err := d.m.Eval(d.pool, d.seq, ctx[len(d.ctx):])
	if err != nil {
		d.Close() // the appended tokens' K/V are undefined
		return DraftTree{}, fmt.Errorf("generate: draft model: %w", err)
	}
	d.ctx = append(d.ctx, ctx[len(d.ctx):]...)
	defer func() {
		for _, c := range d.seq.Children() {
			d.pool.Prune(c)
		}
	}()
	at := map[int]*kvpool.Node{} // tree index -> draft pool node whose last token it is
	logits := map[int][]float32{-1: rootLogits}
	return fillShape(shape, maxDepth, func(t *DraftTree, nodes []int, k int) ([][]int32, error) {
		// Evaluate the nodes that are not evaluated yet (all but the
		// root) in one pass: a node that is its parent's only child
		// being evaluated continues the parent's pool node; siblings
		// fork it.
		var todo []int
		count := map[int]int{}
		for _, x := range nodes {
			if _, ok := logits[x]; !ok {
				todo = append(todo, x)
				count[t.Parents[x]]++
			}
		}
		var placedNodes []int
		var queries []kvpool.Query
		var tokens []int32
		for _, x := range todo {
			p := t.Parents[x]
			var n *kvpool.Node
			var err error
			if p >= 0 && count[p] == 1 {
				n = at[p]
			} else {
				parent := d.seq
				if p >= 0 {
					parent = at[p]
				}
				if n, err = d.pool.Fork(parent); err != nil {
					return nil, fmt.Errorf("generate: draft model: %w", err)
				}
			}
			if _, err := d.pool.Append(n, 1); err != nil {
				if errors.Is(err, kvpool.ErrPoolFull) {
					continue // no room: the node gets no children
				}
				return nil, fmt.Errorf("generate: draft model: %w", err)
			}
			at[x] = n
			placedNodes = append(placedNodes, x)
			queries = append(queries, kvpool.Last(n))
			tokens = append(tokens, t.Tokens[x])
		}
		if len(queries) > 0 {
			step, err := d.pool.Tree(queries)
			if err != nil {
				return nil, fmt.Errorf("generate: draft model: %w", err)
			}
			rows := make([]int, len(queries))
			for i := range rows {
				rows[i] = i
			}
			got, err := d.m.Forward(d.pool, model.Batch{Tokens: tokens, Step: step, LogitRows: rows})
			if err != nil {
				return nil, fmt.Errorf("generate: draft model: %w", err)
			}
			for i, x := range placedNodes {
				logits[x] = got[i]
			}
		}
		out := make([][]int32, len(nodes))
		for i, x := range nodes {
			if l, ok := logits[x]; ok {
				for _, c := range topLogProbs(l, k) {
					out[i] = append(out[i], c.id)
				}
			}
		}
		return out, nil
	})
}

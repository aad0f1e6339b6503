package treeattn

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// TreeKind selects the shape of trees made by RandomTree.
type TreeKind int

// Tree kinds for GenOptions.Kind.
const (
	// KindRandom attaches each node to a uniformly chosen earlier node or,
	// one time in three, to the node just before it, giving bushy trees
	// with some deeper branches.
	KindRandom TreeKind = iota
	// KindChain makes a single path: node i's parent is node i-1.
	KindChain
	// KindStar attaches every node to the root.
	KindStar
)

var treeKindNames = []string{"random", "chain", "star"}

// String returns "random", "chain" or "star".
func (k TreeKind) String() string {
	if k >= 0 && int(k) < len(treeKindNames) {
		return treeKindNames[k]
	}
	return "TreeKind(" + strconv.Itoa(int(k)) + ")"
}

// ParseTreeKind parses the names returned by TreeKind.String.
func ParseTreeKind(s string) (TreeKind, error) {
	for i, name := range treeKindNames {
		if s == name {
			return TreeKind(i), nil
		}
	}
	return 0, fmt.Errorf("parse tree kind: unknown kind %q (want %s)", s, strings.Join(treeKindNames, ", "))
}

// GenOptions configures RandomTree. Zero fields take the defaults noted.
type GenOptions struct {
	// MaxNodes bounds the number of nodes, chosen uniformly in
	// [1, MaxNodes]. Default 16; values above MaxTreeNodes are clamped.
	MaxNodes int
	// MaxNodeTokens bounds the tokens of each node, chosen in
	// [1, MaxNodeTokens] (one node in four has a single token). Default 64;
	// it is clamped so the tree stays within MaxTreeTokens. Sizes up to a
	// few hundred are typical.
	MaxNodeTokens int
	// MaxQueries bounds the number of queries, chosen uniformly in
	// [1, MaxQueries]. Default 32 (workloads typically use at most 256);
	// values above MaxTreeQueries are clamped.
	MaxQueries int
	// Kind is the tree shape.
	Kind TreeKind
	// ShuffleSlots assigns slots from a random permutation of a KV pool up
	// to 25% larger than the token count, so node slots are neither
	// contiguous nor ordered and some pool slots are unused. Otherwise
	// slots are contiguous in node order (AssignContiguousSlots).
	ShuffleSlots bool
}

// RandomTree returns a random valid tree with all slots assigned. Its
// queries mix leaf-last-token queries (the first query always is one) with
// queries at arbitrary positions of arbitrary nodes, including one in the
// root whenever there are at least two queries; the query order is
// shuffled, and a position may be queried more than once.
func RandomTree(rng *rand.Rand, opts GenOptions) *Tree {
	maxNodes := genClamp(opts.MaxNodes, 16, MaxTreeNodes)
	maxTok := genClamp(opts.MaxNodeTokens, 64, MaxTreeTokens/maxNodes)
	maxQ := genClamp(opts.MaxQueries, 32, MaxTreeQueries)

	n := 1 + rng.IntN(maxNodes)
	t := &Tree{Nodes: make([]Node, n)}
	total := 0
	for i := range t.Nodes {
		tok := 1
		if rng.IntN(4) != 0 {
			tok = 1 + rng.IntN(maxTok)
		}
		parent := -1
		if i > 0 {
			switch opts.Kind {
			case KindChain:
				parent = i - 1
			case KindStar:
				parent = 0
			default:
				if rng.IntN(3) == 0 {
					parent = i - 1
				} else {
					parent = rng.IntN(i)
				}
			}
		}
		t.Nodes[i] = Node{Parent: parent, Tokens: tok}
		total += tok
	}

	if opts.ShuffleSlots {
		pool := rng.Perm(total + rng.IntN(total/4+1))
		next := 0
		for i := range t.Nodes {
			nd := &t.Nodes[i]
			nd.Slots = make([]int32, nd.Tokens)
			for j := range nd.Slots {
				nd.Slots[j] = int32(pool[next])
				next++
			}
		}
	} else {
		t.AssignContiguousSlots()
	}

	leaves := t.Leaves()
	nq := 1 + rng.IntN(maxQ)
	t.Queries = make([]Query, nq)
	for i := range t.Queries {
		var node, off int
		switch {
		case i == 0 || (i > 1 && rng.IntN(2) == 0):
			node = leaves[rng.IntN(len(leaves))]
			off = t.Nodes[node].Tokens - 1
		case i == 1:
			node = 0
			off = rng.IntN(t.Nodes[0].Tokens)
		default:
			node = rng.IntN(n)
			off = rng.IntN(t.Nodes[node].Tokens)
		}
		t.Queries[i] = Query{Node: node, Offset: off}
	}
	rng.Shuffle(nq, func(i, j int) { t.Queries[i], t.Queries[j] = t.Queries[j], t.Queries[i] })
	return t
}

// genClamp returns def when v <= 0 and otherwise v limited to hi (at least
// 1).
func genClamp(v, def, hi int) int {
	if v <= 0 {
		v = def
	}
	return max(1, min(v, hi))
}

// FewShotTree returns the tree of few-shot / parallel-sampling decoding: a
// root of prompt tokens with branches children of branchTokens tokens each,
// and one query at the last token of every branch, in branch order. Slots
// are contiguous in node order. It returns nil when an argument is below 1
// or the tree would exceed MaxTreeNodes, MaxTreeQueries or MaxTreeTokens.
func FewShotTree(prompt, branches, branchTokens int) *Tree {
	if prompt < 1 || branches < 1 || branchTokens < 1 ||
		branches >= MaxTreeNodes || branches > MaxTreeQueries ||
		prompt > MaxTreeTokens || branchTokens > (MaxTreeTokens-prompt)/branches {
		return nil
	}
	t := &Tree{
		Nodes:   make([]Node, 1, branches+1),
		Queries: make([]Query, 0, branches),
	}
	t.Nodes[0] = Node{Parent: -1, Tokens: prompt}
	for b := 1; b <= branches; b++ {
		t.Nodes = append(t.Nodes, Node{Parent: 0, Tokens: branchTokens})
		t.Queries = append(t.Queries, Query{Node: b, Offset: branchTokens - 1})
	}
	t.AssignContiguousSlots()
	return t
}

// SpeculativeStar returns the tree of one speculative-decoding step with a
// flat candidate set: a root of prefix tokens with leaves one-token
// children, each of which is a query (offset 0), in leaf order. Slots are
// contiguous in node order. It returns nil when an argument is below 1 or
// the tree would exceed the tree limits.
func SpeculativeStar(prefix, leaves int) *Tree {
	if prefix < 1 || leaves < 1 || leaves >= MaxTreeNodes || leaves > MaxTreeQueries ||
		prefix > MaxTreeTokens-leaves {
		return nil
	}
	t := &Tree{
		Nodes:   make([]Node, 1, leaves+1),
		Queries: make([]Query, 0, leaves),
	}
	t.Nodes[0] = Node{Parent: -1, Tokens: prefix}
	for i := 1; i <= leaves; i++ {
		t.Nodes = append(t.Nodes, Node{Parent: 0, Tokens: 1})
		t.Queries = append(t.Queries, Query{Node: i, Offset: 0})
	}
	t.AssignContiguousSlots()
	return t
}

// NextStep returns the tree of the decoding step after t (slots assigned):
// every node with a query at its last token gains one token, in a slot
// after every slot in use, and those queries move to it; other queries stay.
// Nodes keep their indices, so the result extends t as PlanNext's appended
// promises (benchmarks plan it after t, as a decoding step after the one
// before).
func NextStep(t *Tree) *Tree {
	c := t.Clone()
	next := int32(c.NumSlots())
	grown := make([]bool, len(c.Nodes))
	for _, q := range c.Queries {
		if n := q.Node; !grown[n] && q.Offset == c.Nodes[n].Tokens-1 {
			grown[n] = true
		}
	}
	for i, g := range grown {
		if g {
			c.Nodes[i].Slots = append(c.Nodes[i].Slots, next)
			c.Nodes[i].Tokens++
			next++
		}
	}
	for i, q := range c.Queries {
		if grown[q.Node] && q.Offset == c.Nodes[q.Node].Tokens-2 {
			c.Queries[i].Offset++
		}
	}
	return c
}

package conformance

import (
	"embed"
	"fmt"
	"math/rand/v2"

	"github.com/deft-vk/deft/replay"
	"github.com/deft-vk/deft/treeattn"
)

// DeFT's speculative-decoding token trees (MIT, see trees/LICENSE), with the
// prompts and accept lengths dropped: the suite needs only their shapes.
//
//go:embed trees/*.json
var specTrees embed.FS

// SpecTree loads an embedded token tree by its size (5, 32, 64, 128, 256).
func SpecTree(size int) (*replay.SpecTree, error) {
	b, err := specTrees.ReadFile(fmt.Sprintf("trees/APPS_tree_size%d.json", size))
	if err != nil {
		return nil, fmt.Errorf("speculative tree of size %d: %w", size, err)
	}
	return replay.ParseSpeculativeJSON(b)
}

// SuiteOptions choose the suite's breadth.
type SuiteOptions struct {
	// Full adds large trees (nodes up to 600 tokens, 256 queries, every
	// speculative tree) and more shapes: minutes on a CPU device.
	Full bool
	// Methods restricts the methods (all when empty).
	Methods []treeattn.Method
}

// Suite builds the conformance cases: every method x KV type x head dim x
// GQA ratio over a set of trees. Trees are random, so each call checks new
// inputs and shapes.
func Suite(rng *rand.Rand, opts SuiteOptions) ([]Case, error) {
	methods := opts.Methods
	if len(methods) == 0 {
		methods = treeattn.Methods
	}
	type namedTree struct {
		name string
		tree *treeattn.Tree
	}
	var trees []namedTree
	add := func(name string, t *treeattn.Tree) {
		if t != nil {
			trees = append(trees, namedTree{name, t})
		}
	}
	maxTokens, maxQueries, maxNodes := 48, 12, 10
	specSizes := []int{32}
	if opts.Full {
		maxTokens, maxQueries, maxNodes = 600, 256, 40
		specSizes = []int{5, 32, 64, 128, 256}
	}
	add("random", treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: maxNodes, MaxNodeTokens: maxTokens, MaxQueries: maxQueries, Kind: treeattn.KindRandom, ShuffleSlots: true}))
	add("chain", treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: maxNodes / 2, MaxNodeTokens: maxTokens, MaxQueries: maxQueries, Kind: treeattn.KindChain, ShuffleSlots: true}))
	add("star", treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: maxNodes, MaxNodeTokens: maxTokens, MaxQueries: maxQueries, Kind: treeattn.KindStar}))
	// One sequence decoding one token: the few-row items of plain decoding.
	seq := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: 300 + rng.IntN(700)}}}
	seq.Queries = []treeattn.Query{{Node: 0, Offset: seq.Nodes[0].Tokens - 1}}
	seq.AssignContiguousSlots()
	add("single-query", seq)
	single := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: 1}}, Queries: []treeattn.Query{{Node: 0, Offset: 0}}}
	single.AssignContiguousSlots()
	add("single-token", single)
	rootQueries := &treeattn.Tree{Nodes: []treeattn.Node{{Parent: -1, Tokens: 37}, {Parent: 0, Tokens: 5}},
		Queries: []treeattn.Query{{Node: 0, Offset: 0}, {Node: 0, Offset: 36}, {Node: 1, Offset: 2}, {Node: 0, Offset: 17}}}
	rootQueries.AssignContiguousSlots()
	add("root-queries", rootQueries)
	// A node far longer than one workgroup's bounded work (MaxTilePasses
	// tiles), with many queries: items are cut into token chunks and query slices.
	longNode := treeattn.SpeculativeStar(2100+rng.IntN(300), 9)
	add("long-node", longNode)
	for _, size := range specSizes {
		st, err := SpecTree(size)
		if err != nil {
			return nil, err
		}
		prefix := 1 + rng.IntN(40)
		if opts.Full {
			prefix = 200 + rng.IntN(800)
		}
		add(fmt.Sprintf("speculative-%d+%d", size, prefix), st.TreeWithPrefix(prefix))
	}
	if opts.Full {
		add("few-shot", treeattn.FewShotTree(600+rng.IntN(400), 20, 50+rng.IntN(60)))
		add("spec-star", treeattn.SpeculativeStar(300+rng.IntN(300), 256))
	}

	dims := []int{64, 128, 256}
	shapes := func(dim int) []treeattn.Shape {
		s := []treeattn.Shape{{QHeads: 2, KVHeads: 2, HeadDim: dim}, {QHeads: 8, KVHeads: 2, HeadDim: dim}}
		if opts.Full {
			s = append(s, treeattn.Shape{QHeads: 8, KVHeads: 1, HeadDim: dim})
		}
		return s
	}
	var cases []Case
	for _, m := range methods {
		for _, kv := range []treeattn.KVType{treeattn.KVF32, treeattn.KVF16} {
			for _, dim := range dims {
				for _, s := range shapes(dim) {
					for _, t := range trees {
						cases = append(cases, Case{Name: t.name, Tree: t.tree, Method: m, Shape: s, KV: kv})
					}
					// Both reductions on the random tree, whatever auto picks.
					for _, r := range []string{treeattn.ReduceFused, treeattn.ReduceSeparate} {
						cases = append(cases, Case{Name: trees[0].name + "/" + r + "-reduce", Tree: trees[0].tree, Method: m, Shape: s, KV: kv, Reduce: r})
					}
				}
			}
		}
	}
	return cases, nil
}

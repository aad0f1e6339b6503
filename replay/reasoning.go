package replay

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/deft-vk/deft/treeattn"
)

// Limits enforced by ParseReasoning and ReasoningTree.Validate. The DeFT
// files hold 100 trees of at most 101 nodes and about 78K tokens each.
const (
	// MaxReasoningBytes is the largest reasoning file accepted.
	MaxReasoningBytes = 64 << 20
	// MaxReasoningTrees is the largest number of trees in a file.
	MaxReasoningTrees = 1 << 16
	// MaxReasoningNodes is the largest number of nodes in a tree.
	MaxReasoningNodes = 1 << 16
	// MaxReasoningTokens is the largest sum of node values in a tree; it
	// also bounds |start| and |end|, so a replay has at most this many
	// steps.
	MaxReasoningTokens = treeattn.MaxTreeTokens
)

// ReasoningNode is one node of a Tree-of-Thoughts trace: Value tokens
// generated over decoding iterations Start..End (Value == End-Start+1).
type ReasoningNode struct {
	// ID is the node's id in the trace (its key in "data"), at least 0.
	ID int
	// Value is the node's length in tokens, at least 1.
	Value int
	// Start and End are the first and last iterations that produce the
	// node's tokens. The root (the prompt) ends at iteration 0; every other
	// node starts right after its parent ends.
	Start, End int
	// Children lists the ids of the node's children in trace order.
	Children []int
}

// ReasoningTree is one recorded Tree-of-Thoughts decoding tree from a DeFT
// reasoning file (sorting128ToT.json, set128ToT.json).
type ReasoningTree struct {
	// Name identifies the tree in messages, e.g. "sorting128ToT#16".
	Name string
	// Incompleted is the trace's "incompleted" flag: the recorded run did
	// not finish. The original authors skip such trees; see Completed.
	Incompleted bool
	// Prompt is the prompt text (informational; the root's Value is its
	// length in tokens).
	Prompt string
	// Nodes holds the nodes, sorted by ID after ParseReasoning.
	Nodes []ReasoningNode
}

// TotalTokens returns the sum of the node values: the tokens a replay
// appends.
func (t *ReasoningTree) TotalTokens() int {
	n := 0
	for _, nd := range t.Nodes {
		n += nd.Value
	}
	return n
}

// Iterations returns the number of decoding iterations, the largest End
// plus one (iteration 0 is the prompt): the number of steps of a replay.
func (t *ReasoningTree) Iterations() int {
	m := -1
	for _, nd := range t.Nodes {
		m = max(m, nd.End)
	}
	return m + 1
}

// Completed returns the trees whose Incompleted flag is false, in order.
func Completed(trees []*ReasoningTree) []*ReasoningTree {
	var out []*ReasoningTree
	for _, t := range trees {
		if !t.Incompleted {
			out = append(out, t)
		}
	}
	return out
}

// reasoningIndex is the validated structure of a ReasoningTree, by position
// in Nodes.
type reasoningIndex struct {
	root     int
	parent   []int   // position of the parent, -1 for the root
	children [][]int // positions of the children, in trace order
	maxEnd   int
}

// Validate checks that t is a replayable tree:
//
//   - 1..MaxReasoningNodes nodes with distinct non-negative ids;
//   - every node has 1 <= Value, |Start|, |End| <= MaxReasoningTokens and
//     Value == End-Start+1, and the values sum to at most
//     MaxReasoningTokens;
//   - exactly one node, the root (the prompt), starts at or before
//     iteration 0, and it ends at iteration 0;
//   - children exist, are listed once, are not the root, have a single
//     parent, and every node is reachable from the root (no cycles);
//   - every child starts at its parent's End+1.
func (t *ReasoningTree) Validate() error {
	if _, err := t.index(); err != nil {
		return fmt.Errorf("reasoning tree %s: %w", t.label(), err)
	}
	return nil
}

func (t *ReasoningTree) label() string {
	if t.Name != "" {
		return strconv.Quote(t.Name)
	}
	return "(unnamed)"
}

func (t *ReasoningTree) index() (*reasoningIndex, error) {
	n := len(t.Nodes)
	switch {
	case n == 0:
		return nil, errors.New("tree has no nodes")
	case n > MaxReasoningNodes:
		return nil, fmt.Errorf("tree has %d nodes, more than the limit %d", n, MaxReasoningNodes)
	}
	pos := make(map[int]int, n)
	total := 0
	var roots []int
	for i, nd := range t.Nodes {
		if nd.ID < 0 {
			return nil, fmt.Errorf("node id %d is negative", nd.ID)
		}
		if j, dup := pos[nd.ID]; dup {
			return nil, fmt.Errorf("node id %d appears twice (nodes %d and %d in order)", nd.ID, j, i)
		}
		pos[nd.ID] = i
		switch {
		case nd.Value < 1:
			return nil, fmt.Errorf("node %d: value %d, must be at least 1", nd.ID, nd.Value)
		case nd.Value > MaxReasoningTokens || nd.Start < -MaxReasoningTokens || nd.Start > MaxReasoningTokens ||
			nd.End < -MaxReasoningTokens || nd.End > MaxReasoningTokens:
			return nil, fmt.Errorf("node %d: value %d, start %d or end %d beyond the limit %d", nd.ID, nd.Value, nd.Start, nd.End, MaxReasoningTokens)
		case nd.Value != nd.End-nd.Start+1:
			return nil, fmt.Errorf("node %d: value %d does not match start %d and end %d (want end-start+1 = %d)", nd.ID, nd.Value, nd.Start, nd.End, nd.End-nd.Start+1)
		case nd.Value > MaxReasoningTokens-total:
			return nil, fmt.Errorf("node %d: the tree's values sum to more than the limit %d tokens", nd.ID, MaxReasoningTokens)
		}
		total += nd.Value
		if nd.Start <= 0 {
			roots = append(roots, nd.ID)
		}
	}
	switch {
	case len(roots) == 0:
		return nil, errors.New("no root: no node starts at or before iteration 0 (the prompt)")
	case len(roots) > 1:
		return nil, fmt.Errorf("several roots: nodes %s start at or before iteration 0, only the prompt may", formatIDs(roots, 8))
	}
	ix := &reasoningIndex{
		root:     pos[roots[0]],
		parent:   make([]int, n),
		children: make([][]int, n),
		maxEnd:   t.Nodes[pos[roots[0]]].End,
	}
	if e := t.Nodes[ix.root].End; e != 0 {
		return nil, fmt.Errorf("root node %d ends at iteration %d; the prompt must end at iteration 0", roots[0], e)
	}
	for i := range ix.parent {
		ix.parent[i] = -1
	}
	for i, nd := range t.Nodes {
		for k, c := range nd.Children {
			j, ok := pos[c]
			switch {
			case !ok:
				return nil, fmt.Errorf("node %d: child %d does not exist", nd.ID, c)
			case j == i:
				return nil, fmt.Errorf("node %d: lists itself as a child (a cycle)", nd.ID)
			case slices.Contains(nd.Children[:k], c):
				return nil, fmt.Errorf("node %d: child %d is listed twice", nd.ID, c)
			case j == ix.root:
				return nil, fmt.Errorf("node %d: lists the root %d as a child (a cycle)", nd.ID, c)
			case ix.parent[j] >= 0:
				return nil, fmt.Errorf("node %d has two parents, %d and %d", c, t.Nodes[ix.parent[j]].ID, nd.ID)
			}
			ix.parent[j] = i
			ix.children[i] = append(ix.children[i], j)
		}
	}
	// Every node must hang below the root.
	reached := make([]bool, n)
	reached[ix.root] = true
	queue := []int{ix.root}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for _, j := range ix.children[i] {
			reached[j] = true
			queue = append(queue, j)
		}
	}
	for i, ok := range reached {
		if ok {
			continue
		}
		if ix.parent[i] < 0 {
			return nil, fmt.Errorf("node %d (start %d) is not a child of any node and is not the root", t.Nodes[i].ID, t.Nodes[i].Start)
		}
		return nil, fmt.Errorf("node %d is not reachable from the root: cycle through nodes %s", t.Nodes[i].ID, formatIDs(t.cycleFrom(i, ix.parent), 10))
	}
	for i, nd := range t.Nodes {
		if p := ix.parent[i]; p >= 0 {
			if pe := t.Nodes[p].End; nd.Start != pe+1 {
				return nil, fmt.Errorf("node %d starts at iteration %d, but a child starts right after its parent ends: parent %d ends at %d", nd.ID, nd.Start, t.Nodes[p].ID, pe)
			}
		}
		ix.maxEnd = max(ix.maxEnd, nd.End)
	}
	return ix, nil
}

// cycleFrom follows parent links from position i, which is known not to
// reach the root, and returns the ids on the cycle it runs into.
func (t *ReasoningTree) cycleFrom(i int, parent []int) []int {
	at := map[int]int{}
	var walk []int
	for cur := i; cur >= 0; cur = parent[cur] {
		if k, seen := at[cur]; seen {
			ids := make([]int, 0, len(walk)-k)
			for _, p := range walk[k:] {
				ids = append(ids, t.Nodes[p].ID)
			}
			return ids
		}
		at[cur] = len(walk)
		walk = append(walk, cur)
	}
	return nil
}

func formatIDs(ids []int, limit int) string {
	var sb strings.Builder
	for i, x := range ids {
		if i == limit {
			sb.WriteString(", ...")
			break
		}
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(strconv.Itoa(x))
	}
	return sb.String()
}

type reasoningTreeJSON struct {
	Incompleted *bool           `json:"incompleted"`
	Prompt      *string         `json:"prompt"`
	Data        json.RawMessage `json:"data"`
}

type reasoningNodeJSON struct {
	ID       *int  `json:"id"`
	Value    *int  `json:"value"`
	Start    *int  `json:"start"`
	End      *int  `json:"end"`
	Children []int `json:"children"`
}

// ParseReasoning parses a DeFT reasoning file, a JSON list of trees:
//
//	[{"incompleted": false, "prompt": "...",
//	  "data": {"0": {"id": 0, "value": 1104, "start": -1103, "end": 0, "children": [1, 2]},
//	           "1": {"id": 1, "value": 52, "start": 1, "end": 52, "children": []}, ...}}, ...]
//
// Each tree must have "data" with at least one node; "incompleted" (default
// false) and "prompt" are optional. Every node needs "id", "value", "start"
// and "end" as integers, and its key in "data" must be its id written in
// decimal; "children" (ids) may be absent or null. Every tree must pass
// ReasoningTree.Validate. Unknown fields are ignored; duplicate node keys,
// more than MaxReasoningTrees trees, a document over MaxReasoningBytes and
// data after the JSON value are errors. Trees are named "tree<i>" and keep
// incomplete ones (see Completed); nodes are sorted by id.
func ParseReasoning(data []byte) ([]*ReasoningTree, error) {
	trees, err := parseReasoning(data, "tree")
	if err != nil {
		return nil, fmt.Errorf("parse reasoning json: %w", err)
	}
	return trees, nil
}

// ReadReasoningFile reads and parses a DeFT reasoning file with
// ParseReasoning, naming the trees "<file base name>#<i>", e.g.
// "sorting128ToT#16".
func ReadReasoningFile(path string) ([]*ReasoningTree, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read reasoning file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxReasoningBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read reasoning file: %w", err)
	}
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	trees, err := parseReasoning(data, base+"#")
	if err != nil {
		return nil, fmt.Errorf("parse reasoning file %s: %w", path, err)
	}
	return trees, nil
}

func parseReasoning(data []byte, prefix string) ([]*ReasoningTree, error) {
	if len(data) > MaxReasoningBytes {
		return nil, fmt.Errorf("document is more than the limit of %d bytes", MaxReasoningBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := expectDelim(dec, '[', "a list of trees"); err != nil {
		return nil, err
	}
	var trees []*ReasoningTree
	for dec.More() {
		i := len(trees)
		if i == MaxReasoningTrees {
			return nil, fmt.Errorf("more than the limit of %d trees", MaxReasoningTrees)
		}
		var tj reasoningTreeJSON
		if err := dec.Decode(&tj); err != nil {
			return nil, fmt.Errorf("tree %d: %w", i, err)
		}
		t := &ReasoningTree{Name: prefix + strconv.Itoa(i)}
		if tj.Incompleted != nil {
			t.Incompleted = *tj.Incompleted
		}
		if tj.Prompt != nil {
			t.Prompt = *tj.Prompt
		}
		var err error
		if t.Nodes, err = parseReasoningData(tj.Data); err != nil {
			return nil, fmt.Errorf("tree %d: %w", i, err)
		}
		if _, err := t.index(); err != nil {
			return nil, fmt.Errorf("tree %d: %w", i, err)
		}
		trees = append(trees, t)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return trees, nil
}

// parseReasoningData parses a tree's "data" object, rejecting duplicate
// keys, which encoding/json would silently merge.
func parseReasoningData(raw json.RawMessage) ([]ReasoningNode, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errors.New(`missing "data"`)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := expectDelim(dec, '{', `"data" as an object of nodes`); err != nil {
		return nil, err
	}
	var nodes []ReasoningNode
	keys := map[string]bool{}
	for dec.More() {
		if len(nodes) == MaxReasoningNodes {
			return nil, fmt.Errorf("more than the limit of %d nodes", MaxReasoningNodes)
		}
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string) // object keys are strings
		if keys[key] {
			return nil, fmt.Errorf("data: key %q appears twice", key)
		}
		keys[key] = true
		var nj reasoningNodeJSON
		if err := dec.Decode(&nj); err != nil {
			return nil, fmt.Errorf("node %q: %w", key, err)
		}
		for _, f := range []struct {
			name string
			v    *int
		}{{"id", nj.ID}, {"value", nj.Value}, {"start", nj.Start}, {"end", nj.End}} {
			if f.v == nil {
				return nil, fmt.Errorf("node %q: missing %q", key, f.name)
			}
		}
		if key != strconv.Itoa(*nj.ID) {
			return nil, fmt.Errorf("node %q: key does not match its id %d", key, *nj.ID)
		}
		nodes = append(nodes, ReasoningNode{ID: *nj.ID, Value: *nj.Value, Start: *nj.Start, End: *nj.End, Children: nj.Children})
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, err
	}
	slices.SortFunc(nodes, func(a, b ReasoningNode) int { return cmp.Compare(a.ID, b.ID) })
	return nodes, nil
}

func expectDelim(dec *json.Decoder, want json.Delim, what string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("want %s, got %v", what, tok)
	}
	return nil
}

// Reasoning replays a Tree-of-Thoughts trace. Step i is decoding iteration
// i; the node ids are the trace's.
//
//   - Step 0 (Prefill) forks the root, appends the prompt (the root's Value
//     tokens) and queries its last token.
//   - In step i >= 1, the children of every node that ended at iteration
//     i-1 are forked (each child starts at its parent's End+1); then every
//     live leaf, a node with Start <= i <= End, appends one token, and its
//     last token is a query. Queries keep the order of the previous step,
//     a finished parent replaced by its children in trace order.
//   - After step i, every leaf that ends at i without children is pruned,
//     and so is each ancestor whose last child is gone.
//
// The replay has Iterations() steps and appends TotalTokens() tokens; the
// last step's After prunes the root.
type Reasoning struct {
	tree   *ReasoningTree
	ix     *reasoningIndex
	next   int
	done   bool
	active []int // positions of the live leaves, in query order
	spare  []int
	left   []int // per position: children not yet pruned
	ops    []Op
	after  []Op
	qs     []Query
}

// NewReasoning returns a replay of t, which must pass Validate. Incomplete
// trees are replayed like the others; skip them with Completed.
func NewReasoning(t *ReasoningTree) (*Reasoning, error) {
	ix, err := t.index()
	if err != nil {
		return nil, fmt.Errorf("reasoning tree %s: %w", t.label(), err)
	}
	r := &Reasoning{tree: t, ix: ix, left: make([]int, len(t.Nodes))}
	for i, ch := range ix.children {
		r.left[i] = len(ch)
	}
	return r, nil
}

// Name returns "reasoning-" followed by the tree's name.
func (r *Reasoning) Name() string { return "reasoning-" + r.tree.Name }

// Len returns the number of steps, the tree's Iterations().
func (r *Reasoning) Len() int { return r.ix.maxEnd + 1 }

// Next implements Workload.
func (r *Reasoning) Next() (Step, bool) {
	if r.done {
		return Step{}, false
	}
	i := r.next
	r.next++
	nodes := r.tree.Nodes
	r.ops, r.after, r.qs = r.ops[:0], r.after[:0], r.qs[:0]
	st := Step{Index: i}
	if i == 0 {
		st.Prefill = true
		root := nodes[r.ix.root]
		r.ops = append(r.ops, Op{Kind: OpFork, Node: root.ID, Parent: NoParent}, Op{Kind: OpAppend, Node: root.ID, Tokens: root.Value})
		r.active = append(r.active[:0], r.ix.root)
	} else {
		next := r.spare[:0]
		for _, a := range r.active {
			if nodes[a].End >= i {
				next = append(next, a)
				continue
			}
			// a ended at i-1 and has children (leaves were pruned).
			for _, c := range r.ix.children[a] {
				r.ops = append(r.ops, Op{Kind: OpFork, Node: nodes[c].ID, Parent: nodes[a].ID})
				next = append(next, c)
			}
		}
		r.active, r.spare = next, r.active
		for _, a := range r.active {
			r.ops = append(r.ops, Op{Kind: OpAppend, Node: nodes[a].ID, Tokens: 1})
		}
	}
	live := 0
	for _, a := range r.active {
		r.qs = append(r.qs, Query{Node: nodes[a].ID, Offset: i - nodes[a].Start})
		if nodes[a].End > i || len(r.ix.children[a]) > 0 {
			live++
			continue
		}
		// A finished leaf: prune it and every ancestor left childless.
		for p := a; p >= 0; p = r.ix.parent[p] {
			r.after = append(r.after, Op{Kind: OpPrune, Node: nodes[p].ID})
			if q := r.ix.parent[p]; q >= 0 {
				if r.left[q]--; r.left[q] > 0 {
					break
				}
			}
		}
	}
	r.done = live == 0
	st.Ops, st.Queries, st.After = orNil(r.ops), orNil(r.qs), orNil(r.after)
	return st, true
}

package treeattn

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// Limits enforced by ParseSpeculativeJSON.
const (
	// MaxSpecJSONBytes is the largest speculative token-tree file accepted.
	MaxSpecJSONBytes = 64 << 20
	// MaxSpecTokens is the largest token tree accepted, counting the
	// implicit root token.
	MaxSpecTokens = 1 << 16
	// MaxSpecDepth is the longest candidate path accepted.
	MaxSpecDepth = 1 << 10
)

// SpecTree is a speculative-decoding token tree read from one of DeFT's
// token-tree files (for example APPS_tree_size32.json). Token 0 is the
// implicit root, the last accepted token; token i >= 1 is the candidate
// path Paths[i-1].
type SpecTree struct {
	// TreeID is the file's "Tree_ID", as text (the files use numbers).
	TreeID string
	// DeclaredSize is the file's "Token_Tree_size". It is informational:
	// APPS_tree_size5.json declares 5 but lists 5 paths, i.e. 6 tokens.
	DeclaredSize int
	// Paths is "Tree_Structure": Paths[i] = [a, b, c] is the c-th best
	// (0-based) candidate after the a-th best first token and its b-th best
	// successor.
	Paths [][]int
	// Parents[i] is the token-tree parent of token i; Parents[0] == -1 and
	// Parents[i] < i.
	Parents []int
	// Prompts, AcceptLengths and AvgAcceptLengths hold each record's
	// "prompt", "Accept_length" (accepted tokens per decoding step) and
	// "Avg_accept_length" (0 when absent), one entry per record.
	Prompts          []string
	AcceptLengths    [][]int
	AvgAcceptLengths []float64
}

// Size returns the number of tokens in the token tree, including the
// implicit root.
func (s *SpecTree) Size() int {
	return len(s.Parents)
}

// Depths returns the depth of every token, 0 for the root token, or -1 for
// tokens whose parent chain is invalid (not possible after
// ParseSpeculativeJSON).
func (s *SpecTree) Depths() []int {
	d := make([]int, len(s.Parents))
	for i, p := range s.Parents {
		switch {
		case i == 0 && p == -1:
			d[i] = 0
		case i > 0 && p >= 0 && p < i && d[p] >= 0:
			d[i] = d[p] + 1
		default:
			d[i] = -1
		}
	}
	return d
}

type specJSONRecord struct {
	Prompt          string   `json:"prompt"`
	AcceptLength    []int    `json:"Accept_length"`
	AvgAcceptLength *float64 `json:"Avg_accept_length"`
}

type specJSONDoc struct {
	TreeID        json.RawMessage  `json:"Tree_ID"`
	TokenTreeSize json.RawMessage  `json:"Token_Tree_size"`
	TreeStructure *[][]int         `json:"Tree_Structure"`
	Records       []specJSONRecord `json:"Records"`
}

// ParseSpeculativeJSON parses one of DeFT's speculative-decoding token-tree
// files:
//
//	{"Tree_ID": 0, "Token_Tree_size": 32,
//	 "Tree_Structure": [[0], [1], [0, 0], [0, 1], ...],
//	 "Records": [{"prompt": "...", "Accept_length": [1, 4, ...],
//	              "Avg_accept_length": 4.33}, ...]}
//
// "Tree_Structure" (required) lists Medusa-style candidate paths; the root
// token is implicit, so the token tree has len(Tree_Structure)+1 tokens.
// Every path must be non-empty with non-negative entries, appear once, and
// have its prefix (the path minus its last entry) listed earlier unless it
// has length 1. "Tree_ID" and "Token_Tree_size" may be numbers or strings
// and are optional; "Records" is optional and its accept lengths must be
// non-negative. Unknown fields are ignored; data after the JSON value is an
// error.
func ParseSpeculativeJSON(data []byte) (*SpecTree, error) {
	s, err := parseSpeculativeJSON(data)
	if err != nil {
		return nil, fmt.Errorf("parse speculative tree json: %w", err)
	}
	return s, nil
}

func parseSpeculativeJSON(data []byte) (*SpecTree, error) {
	if len(data) > MaxSpecJSONBytes {
		return nil, fmt.Errorf("document is %d bytes, more than the limit %d", len(data), MaxSpecJSONBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var doc specJSONDoc
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON value")
	}
	s := &SpecTree{}
	var err error
	if s.TreeID, err = specText(doc.TreeID); err != nil {
		return nil, fmt.Errorf("Tree_ID: %w", err)
	}
	sizeText, err := specText(doc.TokenTreeSize)
	if err != nil {
		return nil, fmt.Errorf("Token_Tree_size: %w", err)
	}
	if sizeText != "" {
		if s.DeclaredSize, err = strconv.Atoi(sizeText); err != nil || s.DeclaredSize < 0 {
			return nil, fmt.Errorf("Token_Tree_size %q is not a non-negative integer", sizeText)
		}
	}
	if doc.TreeStructure == nil {
		return nil, errors.New(`missing "Tree_Structure"`)
	}
	paths := *doc.TreeStructure
	if len(paths)+1 > MaxSpecTokens {
		return nil, fmt.Errorf("Tree_Structure has %d paths, more than the limit %d", len(paths), MaxSpecTokens-1)
	}
	s.Paths = paths
	s.Parents = make([]int, len(paths)+1)
	s.Parents[0] = -1
	index := make(map[string]int, len(paths)) // path key -> token index
	var key []byte
	for i, p := range paths {
		if len(p) == 0 {
			return nil, fmt.Errorf("Tree_Structure[%d] is empty", i)
		}
		if len(p) > MaxSpecDepth {
			return nil, fmt.Errorf("Tree_Structure[%d] has length %d, more than the limit %d", i, len(p), MaxSpecDepth)
		}
		key = key[:0]
		parentKeyLen := 0
		for j, c := range p {
			if c < 0 {
				return nil, fmt.Errorf("Tree_Structure[%d] = %v has a negative entry", i, p)
			}
			if j == len(p)-1 {
				parentKeyLen = len(key)
			}
			key = strconv.AppendInt(key, int64(c), 10)
			key = append(key, ',')
		}
		if _, dup := index[string(key)]; dup {
			return nil, fmt.Errorf("Tree_Structure[%d] = %v appears twice", i, p)
		}
		if len(p) > 1 {
			parent, ok := index[string(key[:parentKeyLen])]
			if !ok {
				return nil, fmt.Errorf("Tree_Structure[%d] = %v: its prefix %v is not listed before it", i, p, p[:len(p)-1])
			}
			s.Parents[i+1] = parent
		}
		index[string(key)] = i + 1
	}
	for r, rec := range doc.Records {
		for j, a := range rec.AcceptLength {
			if a < 0 {
				return nil, fmt.Errorf("Records[%d].Accept_length[%d] = %d is negative", r, j, a)
			}
		}
		avg := 0.0
		if rec.AvgAcceptLength != nil {
			avg = *rec.AvgAcceptLength
		}
		s.Prompts = append(s.Prompts, rec.Prompt)
		s.AcceptLengths = append(s.AcceptLengths, rec.AcceptLength)
		s.AvgAcceptLengths = append(s.AvgAcceptLengths, avg)
	}
	return s, nil
}

// specText returns a JSON string's value or a JSON number's text; absent or
// null gives "".
func specText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return string(raw), nil
	}
	return "", fmt.Errorf("want a number or a string, got %.20s", raw)
}

// TreeWithPrefix returns the attention tree of one speculative decoding
// step over this token tree after prefix committed tokens. Node 0 (the
// root) holds the prefix tokens, which do not include the token tree's
// implicit root token; node i+1 is a one-token node holding token-tree
// token i, so node 1 (the implicit root token, the last accepted token) is
// a child of node 0 and node i+1's parent is node Parents[i]+1. Every
// token-tree token is a query at offset 0 of its node, in token order, so
// the tree has Size() queries. Slots are contiguous in node order: the
// prefix uses slots 0..prefix-1 and token i uses slot prefix+i. It returns
// nil when prefix < 1 or the tree would exceed the tree limits.
func (s *SpecTree) TreeWithPrefix(prefix int) *Tree {
	n := len(s.Parents)
	if prefix < 1 || n < 1 || n >= MaxTreeNodes || n > MaxTreeQueries || prefix > MaxTreeTokens-n {
		return nil
	}
	t := &Tree{Nodes: make([]Node, n+1), Queries: make([]Query, n)}
	t.Nodes[0] = Node{Parent: -1, Tokens: prefix}
	for i, p := range s.Parents {
		if (i == 0 && p != -1) || (i > 0 && (p < 0 || p >= i)) {
			return nil // not produced by ParseSpeculativeJSON
		}
		t.Nodes[i+1] = Node{Parent: p + 1, Tokens: 1}
		t.Queries[i] = Query{Node: i + 1, Offset: 0}
	}
	t.AssignContiguousSlots()
	return t
}

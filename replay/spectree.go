package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/deft-vk/deft/treeattn"
)

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
func (s *SpecTree) TreeWithPrefix(prefix int) *treeattn.Tree {
	n := len(s.Parents)
	if prefix < 1 || n < 1 || n >= treeattn.MaxTreeNodes || n > treeattn.MaxTreeQueries || prefix > treeattn.MaxTreeTokens-n {
		return nil
	}
	t := &treeattn.Tree{Nodes: make([]treeattn.Node, n+1), Queries: make([]treeattn.Query, n)}
	t.Nodes[0] = treeattn.Node{Parent: -1, Tokens: prefix}
	for i, p := range s.Parents {
		if (i == 0 && p != -1) || (i > 0 && (p < 0 || p >= i)) {
			return nil // not produced by ParseSpeculativeJSON
		}
		t.Nodes[i+1] = treeattn.Node{Parent: p + 1, Tokens: 1}
		t.Queries[i] = treeattn.Query{Node: i + 1, Offset: 0}
	}
	t.AssignContiguousSlots()
	return t
}

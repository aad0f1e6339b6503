package treeattn

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MaxTreeJSONBytes is the largest tree JSON document ParseTreeJSON accepts.
const MaxTreeJSONBytes = 1 << 30

type treeJSONNode struct {
	Parent *int    `json:"parent"`
	Tokens *int    `json:"tokens"`
	Slots  []int32 `json:"slots"`
}

type treeJSONQuery struct {
	Node   *int `json:"node"`
	Offset *int `json:"offset"`
}

type treeJSONDoc struct {
	Nodes   []treeJSONNode   `json:"nodes"`
	Queries *[]treeJSONQuery `json:"queries"`
}

// ParseTreeJSON parses a tree in the tree JSON format, assigns contiguous
// slots to nodes without "slots", adds the default leaf queries when
// "queries" is absent, and validates the result with a KV pool of exactly
// NumSlots() slots. The format, also written by WriteTreeJSON and used by
// Tree.MarshalJSON and Tree.UnmarshalJSON, is:
//
//	{"nodes": [{"parent": -1, "tokens": 4},
//	           {"parent": 0, "tokens": 2, "slots": [10, 11]}],
//	 "queries": [{"node": 1, "offset": 1}]}
//
// "nodes" (required, non-empty) lists the nodes in topological order: node i
// is the i-th element, node 0 is the root with "parent": -1, and every other
// node's "parent" is the index of an earlier node. Each node has:
//
//   - "parent" (required): parent node index, -1 for the root only;
//   - "tokens" (required): number of tokens in the node, at least 1;
//   - "slots" (optional): the KV-pool slot of each of the node's tokens, in
//     token order, "tokens" distinct integers in [0, 2^31). Omitted or null
//     slots are assigned consecutively, in node order, starting after the
//     largest slot given explicitly anywhere in the document. In the example
//     node 1 uses slots 10 and 11 and node 0 gets slots 12..15, so the KV
//     pool needs 16 slots. No slot may appear twice in a tree.
//
// "queries" (optional) lists the token positions whose attention is
// computed, in output order. Each has "node" (required, node index) and
// "offset" (required, 0 <= offset < that node's tokens); the query attends
// to all tokens of the node's strict ancestors and tokens 0..offset of the
// node. When "queries" is omitted or null there is one query per leaf node
// (a node without children), at its last token, in increasing node order.
// An explicit empty list is an error.
//
// Parsing is strict: unknown fields, missing required fields, non-integer
// numbers, data after the JSON value, documents larger than MaxTreeJSONBytes
// and trees over the MaxTreeNodes, MaxTreeQueries or MaxTreeTokens limits
// are errors, and the parsed tree must pass Tree.Validate.
func ParseTreeJSON(data []byte) (*Tree, error) {
	t, err := parseTreeJSON(data, MaxTreeTokens)
	if err != nil {
		return nil, fmt.Errorf("parse tree json: %w", err)
	}
	return t, nil
}

// parseTreeJSON is ParseTreeJSON with a configurable token limit (the fuzz
// test uses a small one to keep allocations small).
func parseTreeJSON(data []byte, maxTokens int) (*Tree, error) {
	if len(data) > MaxTreeJSONBytes {
		return nil, fmt.Errorf("document is %d bytes, more than the limit %d", len(data), MaxTreeJSONBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var doc treeJSONDoc
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON value")
	}
	if doc.Nodes == nil {
		return nil, errors.New(`missing "nodes"`)
	}
	if len(doc.Nodes) > MaxTreeNodes {
		return nil, fmt.Errorf("%d nodes, more than the limit %d", len(doc.Nodes), MaxTreeNodes)
	}
	t := &Tree{Nodes: make([]Node, len(doc.Nodes))}
	total := 0
	for i, jn := range doc.Nodes {
		if jn.Parent == nil {
			return nil, fmt.Errorf(`node %d: missing "parent"`, i)
		}
		if jn.Tokens == nil {
			return nil, fmt.Errorf(`node %d: missing "tokens"`, i)
		}
		tok := *jn.Tokens
		if tok < 1 {
			return nil, fmt.Errorf("node %d: tokens is %d, must be at least 1", i, tok)
		}
		if tok > maxTokens-total {
			return nil, fmt.Errorf("node %d: total token count exceeds the limit %d", i, maxTokens)
		}
		total += tok
		t.Nodes[i] = Node{Parent: *jn.Parent, Tokens: tok, Slots: jn.Slots}
	}
	if doc.Queries == nil {
		for _, leaf := range t.Leaves() {
			t.Queries = append(t.Queries, Query{Node: leaf, Offset: t.Nodes[leaf].Tokens - 1})
		}
	} else {
		if len(*doc.Queries) > MaxTreeQueries {
			return nil, fmt.Errorf("%d queries, more than the limit %d", len(*doc.Queries), MaxTreeQueries)
		}
		t.Queries = make([]Query, len(*doc.Queries))
		for i, jq := range *doc.Queries {
			if jq.Node == nil {
				return nil, fmt.Errorf(`query %d: missing "node"`, i)
			}
			if jq.Offset == nil {
				return nil, fmt.Errorf(`query %d: missing "offset"`, i)
			}
			t.Queries[i] = Query{Node: *jq.Node, Offset: *jq.Offset}
		}
	}
	numSlots := t.AssignContiguousSlots()
	if err := t.Validate(numSlots); err != nil {
		return nil, err
	}
	if !t.SlotsAssigned() {
		return nil, errors.New("cannot assign slots: slot numbers would exceed 2^31-1")
	}
	return t, nil
}

// appendTreeJSON appends t in the tree JSON format, one node or query per
// line.
func appendTreeJSON(b []byte, t *Tree) []byte {
	b = append(b, "{\"nodes\": [\n"...)
	for i, nd := range t.Nodes {
		b = append(b, "  {\"parent\": "...)
		b = strconv.AppendInt(b, int64(nd.Parent), 10)
		b = append(b, ", \"tokens\": "...)
		b = strconv.AppendInt(b, int64(nd.Tokens), 10)
		if nd.Slots != nil {
			b = append(b, ", \"slots\": ["...)
			for j, s := range nd.Slots {
				if j > 0 {
					b = append(b, ", "...)
				}
				b = strconv.AppendInt(b, int64(s), 10)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
		if i+1 < len(t.Nodes) {
			b = append(b, ',')
		}
		b = append(b, '\n')
	}
	b = append(b, "],\n\"queries\": [\n"...)
	for i, q := range t.Queries {
		b = append(b, "  {\"node\": "...)
		b = strconv.AppendInt(b, int64(q.Node), 10)
		b = append(b, ", \"offset\": "...)
		b = strconv.AppendInt(b, int64(q.Offset), 10)
		b = append(b, '}')
		if i+1 < len(t.Queries) {
			b = append(b, ',')
		}
		b = append(b, '\n')
	}
	return append(b, "]}\n"...)
}

// MarshalJSON encodes t in the tree JSON format with explicit queries, and
// with explicit slots for nodes whose Slots are assigned. The tree must pass
// Validate(t.NumSlots()). Pass a *Tree to encoding/json to use it.
func (t *Tree) MarshalJSON() ([]byte, error) {
	if err := t.Validate(t.NumSlots()); err != nil {
		return nil, fmt.Errorf("marshal tree json: %w", err)
	}
	return appendTreeJSON(nil, t), nil
}

// UnmarshalJSON decodes the tree JSON format into t, like ParseTreeJSON.
func (t *Tree) UnmarshalJSON(data []byte) error {
	p, err := ParseTreeJSON(data)
	if err != nil {
		return err
	}
	*t = *p
	return nil
}

// WriteTreeJSON writes t to w in the tree JSON format (see MarshalJSON),
// one node or query per line. ParseTreeJSON of the output yields a tree
// equal to t when all of t's slots are assigned.
func WriteTreeJSON(w io.Writer, t *Tree) error {
	b, err := t.MarshalJSON()
	if err != nil {
		return fmt.Errorf("write tree json: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write tree json: %w", err)
	}
	return nil
}

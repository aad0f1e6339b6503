package treeattn

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTreeJSONExample(t *testing.T) {
	doc := `{"nodes": [{"parent": -1, "tokens": 4}, {"parent": 0, "tokens": 2, "slots": [10, 11]}],
	 "queries": [{"node": 1, "offset": 1}]}`
	tr, err := ParseTreeJSON([]byte(doc))
	require.NoError(t, err)
	assert.Equal(t, &Tree{
		Nodes: []Node{
			{Parent: -1, Tokens: 4, Slots: []int32{12, 13, 14, 15}},
			{Parent: 0, Tokens: 2, Slots: []int32{10, 11}},
		},
		Queries: []Query{{Node: 1, Offset: 1}},
	}, tr)
	assert.Equal(t, 16, tr.NumSlots())
}

func TestParseTreeJSONDefaultQueries(t *testing.T) {
	doc := `{"nodes": [{"parent": -1, "tokens": 3}, {"parent": 0, "tokens": 2},
	  {"parent": 0, "tokens": 5, "slots": null}, {"parent": 1, "tokens": 1}], "queries": null}`
	tr, err := ParseTreeJSON([]byte(doc))
	require.NoError(t, err)
	assert.Equal(t, []Query{{Node: 2, Offset: 4}, {Node: 3, Offset: 0}}, tr.Queries)
	assert.Equal(t, []int32{0, 1, 2}, tr.Nodes[0].Slots)
	assert.Equal(t, []int32{10}, tr.Nodes[3].Slots)

	single, err := ParseTreeJSON([]byte(`{"nodes": [{"parent": -1, "tokens": 7}]}`))
	require.NoError(t, err)
	assert.Equal(t, []Query{{Node: 0, Offset: 6}}, single.Queries)
}

func TestParseTreeJSONErrors(t *testing.T) {
	cases := []struct{ name, doc, msg string }{
		{"empty", ``, "EOF"},
		{"not object", `[1]`, "cannot unmarshal"},
		{"unknown field", `{"nodes": [{"parent": -1, "tokens": 1, "size": 3}]}`, `unknown field "size"`},
		{"unknown top field", `{"nodes": [{"parent": -1, "tokens": 1}], "scale": 1}`, `unknown field "scale"`},
		{"trailing data", `{"nodes": [{"parent": -1, "tokens": 1}]} {}`, "after the JSON value"},
		{"trailing garbage", `{"nodes": [{"parent": -1, "tokens": 1}]}]`, "after the JSON value"},
		{"missing nodes", `{"queries": [{"node": 0, "offset": 0}]}`, `missing "nodes"`},
		{"no nodes", `{"nodes": []}`, "no nodes"},
		{"missing parent", `{"nodes": [{"tokens": 1}]}`, `node 0: missing "parent"`},
		{"missing tokens", `{"nodes": [{"parent": -1}]}`, `node 0: missing "tokens"`},
		{"zero tokens", `{"nodes": [{"parent": -1, "tokens": 0}]}`, "tokens is 0"},
		{"fraction", `{"nodes": [{"parent": -1, "tokens": 1.5}]}`, "cannot unmarshal"},
		{"string number", `{"nodes": [{"parent": -1, "tokens": "1"}]}`, "cannot unmarshal"},
		{"too many tokens", `{"nodes": [{"parent": -1, "tokens": 100000000}]}`, "exceeds the limit"},
		{"empty queries", `{"nodes": [{"parent": -1, "tokens": 1}], "queries": []}`, "no queries"},
		{"query missing offset", `{"nodes": [{"parent": -1, "tokens": 1}], "queries": [{"node": 0}]}`, `query 0: missing "offset"`},
		{"query missing node", `{"nodes": [{"parent": -1, "tokens": 1}], "queries": [{"offset": 0}]}`, `query 0: missing "node"`},
		{"query offset", `{"nodes": [{"parent": -1, "tokens": 2}], "queries": [{"node": 0, "offset": 2}]}`, "offset 2 outside node 0"},
		{"slot count", `{"nodes": [{"parent": -1, "tokens": 2, "slots": [1]}]}`, "has 1 slots for 2 tokens"},
		{"negative slot", `{"nodes": [{"parent": -1, "tokens": 1, "slots": [-3]}]}`, "slot -3 outside"},
		{"slot overflow", `{"nodes": [{"parent": -1, "tokens": 1, "slots": [4294967296]}]}`, "cannot unmarshal"},
		{"duplicate slot", `{"nodes": [{"parent": -1, "tokens": 2, "slots": [5, 6]}, {"parent": 0, "tokens": 1, "slots": [5]}]}`, "slot 5 is used twice"},
		{"cycle", `{"nodes": [{"parent": -1, "tokens": 1}, {"parent": 2, "tokens": 1}, {"parent": 1, "tokens": 1}]}`, "cycle"},
		{"missing parent node", `{"nodes": [{"parent": -1, "tokens": 1}, {"parent": 9, "tokens": 1}]}`, "missing parent 9"},
		{"two roots", `{"nodes": [{"parent": -1, "tokens": 1}, {"parent": -1, "tokens": 1}]}`, "several roots"},
		{"slot number overflow on assign", `{"nodes": [{"parent": -1, "tokens": 1, "slots": [2147483647]}, {"parent": 0, "tokens": 1}]}`, "cannot assign slots"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr, err := ParseTreeJSON([]byte(c.doc))
			require.Error(t, err)
			assert.Nil(t, tr)
			assert.Contains(t, err.Error(), c.msg)
			assert.True(t, strings.HasPrefix(err.Error(), "parse tree json: "), err.Error())
		})
	}
}

func TestTreeJSONRoundTripRandom(t *testing.T) {
	rng := treeTestRNG(t)
	for iter := 0; iter < 100; iter++ {
		tr := RandomTree(rng, GenOptions{MaxNodes: 30, MaxNodeTokens: 20, MaxQueries: 20,
			Kind: TreeKind(rng.IntN(3)), ShuffleSlots: rng.IntN(2) == 0})
		var buf bytes.Buffer
		require.NoError(t, WriteTreeJSON(&buf, tr))
		back, err := ParseTreeJSON(buf.Bytes())
		require.NoError(t, err, buf.String())
		require.Equal(t, tr, back)

		// encoding/json integration, both directions.
		b, err := json.Marshal(tr)
		require.NoError(t, err)
		var viaStd Tree
		require.NoError(t, json.Unmarshal(b, &viaStd))
		require.Equal(t, tr, &viaStd)
	}
}

func TestWriteTreeJSONFormat(t *testing.T) {
	tr := &Tree{
		Nodes:   []Node{{Parent: -1, Tokens: 2, Slots: []int32{0, 1}}, {Parent: 0, Tokens: 1}},
		Queries: []Query{{Node: 1, Offset: 0}},
	}
	var buf bytes.Buffer
	require.NoError(t, WriteTreeJSON(&buf, tr))
	assert.Equal(t, `{"nodes": [
  {"parent": -1, "tokens": 2, "slots": [0, 1]},
  {"parent": 0, "tokens": 1}
],
"queries": [
  {"node": 1, "offset": 0}
]}
`, buf.String())

	bad := &Tree{Nodes: []Node{{Parent: -1, Tokens: 1}}}
	err := WriteTreeJSON(&buf, bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no queries")
	_, err = json.Marshal(bad)
	require.Error(t, err)
	var into Tree
	require.Error(t, json.Unmarshal([]byte(`{"nodes": []}`), &into))
}

// FuzzParseTreeJSON checks that parsing never panics and that every
// accepted document yields a valid tree that survives a write/parse round
// trip unchanged.
func FuzzParseTreeJSON(f *testing.F) {
	seeds := []string{
		`{"nodes": [{"parent": -1, "tokens": 4}, {"parent": 0, "tokens": 2, "slots": [10, 11]}], "queries": [{"node": 1, "offset": 1}]}`,
		`{"nodes": [{"parent": -1, "tokens": 3}, {"parent": 0, "tokens": 2}, {"parent": 1, "tokens": 1}]}`,
		`{"nodes": [{"parent": -1, "tokens": 1, "slots": [2147483647]}, {"parent": 0, "tokens": 1}]}`,
		`{"nodes": [{"parent": -1, "tokens": 1}, {"parent": 2, "tokens": 1}, {"parent": 1, "tokens": 1}]}`,
		`{"nodes": [{"parent": -1, "tokens": 2, "slots": [5, 5]}]}`,
		`{"nodes": [{"parent": -1, "tokens": 2}], "queries": [{"node": 0, "offset": 2}]}`,
		`{"nodes": [{"parent": -1, "tokens": 2}], "queries": []}`,
		`{"nodes": []}`,
		`{"nodes": [{"parent": -1, "tokens": 1}]} x`,
		`{}`,
		`null`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A small token limit keeps each execution cheap.
		tr, err := parseTreeJSON(data, 1<<12)
		if err != nil {
			require.Nil(t, tr)
			return
		}
		require.NoError(t, tr.Validate(tr.NumSlots()))
		require.True(t, tr.SlotsAssigned())
		var buf bytes.Buffer
		require.NoError(t, WriteTreeJSON(&buf, tr))
		back, err := ParseTreeJSON(buf.Bytes())
		require.NoError(t, err)
		require.Equal(t, tr, back)
	})
}

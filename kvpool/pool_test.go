package kvpool

import (
	"fmt"
	"math"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// testConfig is a small pool of pages pages.
func testConfig(kv treeattn.KVType, pageTokens, pages int) Config {
	c := Config{Layers: 2, KVHeads: 2, HeadDim: 32, KV: kv, PageTokens: pageTokens}
	c.BudgetBytes = uint64(pages)*c.PageBytes() + c.PageBytes() - 1 // a page's worth short of one more
	return c
}

func newPool(t *testing.T, cfg Config) (*Pool, *vk.Device) {
	t.Helper()
	d := gputest.Device(t)
	p, err := New(d, cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p, d
}

func TestConfigErrors(t *testing.T) {
	d := gputest.Device(t)
	ok := Config{Layers: 1, KVHeads: 2, HeadDim: 64, KV: treeattn.KVF16, BudgetBytes: 1 << 20}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"layers", func(c *Config) { c.Layers = 0 }, "layers 0"},
		{"odd head dim", func(c *Config) { c.HeadDim = 63 }, "head dim 63 must be a multiple of 4 and at most 512"},
		{"page size", func(c *Config) { c.PageTokens = -1 }, "page size -1"},
		{"kv type", func(c *Config) { c.KV = 7 }, "unknown KV type"},
		{"budget below a page", func(c *Config) { c.BudgetBytes = c.PageBytes() - 1 }, "less than one page"},
		{"storage buffer range", func(c *Config) {
			c.KVHeads, c.HeadDim, c.KV = 8, 128, treeattn.KVF32
			c.BudgetBytes = 2*uint64(d.Info.MaxStorageBufferRange) + 2*c.PageBytes()
		}, "maxStorageBufferRange"},
	} {
		cfg := ok
		tc.edit(&cfg)
		p, err := New(d, cfg)
		require.ErrorContains(t, err, tc.want, tc.name)
		require.ErrorContains(t, err, "kvpool: new pool", tc.name)
		require.Nil(t, p)
	}
	p, err := New(d, ok)
	require.NoError(t, err)
	defer p.Close()
	require.Equal(t, DefaultPageTokens, p.Config().PageTokens)
	require.LessOrEqual(t, uint64(p.NumPages())*p.Config().PageBytes(), ok.BudgetBytes)
	require.Greater(t, uint64(p.NumPages()+1)*p.Config().PageBytes(), ok.BudgetBytes)
	require.Equal(t, uint64(p.NumSlots())*ok.RowBytes(), p.K(0).Size())
	require.Equal(t, p.K(0).Size(), p.V(0).Size())
}

// TestForkSharesWithoutCopy: a fork shares the parent's pages, starts on a
// fresh page, and the parent's reserved tail room comes back once its
// children are gone.
func TestForkSharesWithoutCopy(t *testing.T) {
	p, err := newHost(testConfig(treeattn.KVF32, 4, 16))
	require.NoError(t, err)
	s := p.NewSequence()
	slots, err := p.Append(s, 10)
	require.NoError(t, err)
	require.Equal(t, []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, slots)
	a, err := p.Fork(s)
	require.NoError(t, err)
	b, err := p.Fork(s)
	require.NoError(t, err)
	_, err = p.Append(s, 1)
	require.ErrorContains(t, err, "has 2 children")
	sa, err := p.Append(a, 1)
	require.NoError(t, err)
	sb, err := p.Append(b, 5)
	require.NoError(t, err)
	require.Equal(t, []int32{12}, sa, "a starts on fresh page 3")
	require.Equal(t, []int32{16, 17, 18, 19, 20}, sb, "b starts on fresh page 4")
	require.Equal(t, 10, a.Len()-1)
	st := p.Stats()
	require.Equal(t, 3, st.PagesShared, "s's pages are read by both branches")
	require.Equal(t, 2, st.Sequences)
	require.Equal(t, 11+15, st.LogicalTokens)
	require.Equal(t, 16, st.Tokens)
	require.Equal(t, int64(3+4)*int64(st.PageBytes)-int64(st.BytesInUse), st.BytesSaved)
	require.NoError(t, p.checkInvariants())

	require.NoError(t, p.Prune(a))
	require.NoError(t, p.Prune(b))
	more, err := p.Append(s, 3)
	require.NoError(t, err)
	require.Equal(t, []int32{10, 11, 20}, more, "s continues in its own last page, then takes the most recently freed page")
	require.NoError(t, p.checkInvariants())
}

// TestPruneFreesAndReuses: pages whose count drops to 0 go back to the free
// list and the next allocation reuses them; pruning a node prunes its
// subtree; pruned handles are rejected.
func TestPruneFreesAndReuses(t *testing.T) {
	p, err := newHost(testConfig(treeattn.KVF16, 4, 8))
	require.NoError(t, err)
	s := p.NewSequence()
	_, err = p.Append(s, 4)
	require.NoError(t, err)
	c, err := p.Fork(s)
	require.NoError(t, err)
	cs, err := p.Append(c, 6)
	require.NoError(t, err)
	require.Equal(t, []int32{4, 5, 6, 7, 8, 9}, cs)
	g, err := p.Fork(c)
	require.NoError(t, err)
	_, err = p.Append(g, 1)
	require.NoError(t, err)
	require.Equal(t, 8-4, p.FreePages())
	require.NoError(t, p.Prune(c)) // and g with it
	require.False(t, g.Live())
	require.Equal(t, 8-1, p.FreePages())
	_, err = p.Append(g, 1)
	require.ErrorIs(t, err, ErrPruned)
	require.ErrorIs(t, p.Prune(c), ErrPruned)
	c2, err := p.Fork(s)
	require.NoError(t, err)
	again, err := p.Append(c2, 6)
	require.NoError(t, err)
	require.Equal(t, []int32{12, 13, 14, 15, 8, 9}, again, "pages 3 and 2, freed last, come back first")
	require.NoError(t, p.checkInvariants())
}

// TestPoolFullLeavesStateUnchanged: a failed allocation is a FullError,
// changes nothing, and succeeds after pruning.
func TestPoolFullLeavesStateUnchanged(t *testing.T) {
	p, err := newHost(testConfig(treeattn.KVF16, 4, 6))
	require.NoError(t, err)
	s := p.NewSequence()
	_, err = p.Append(s, 14)
	require.NoError(t, err)
	b, err := p.Fork(s)
	require.NoError(t, err)
	_, err = p.Append(b, 4)
	require.NoError(t, err)
	c, err := p.Fork(s)
	require.NoError(t, err)
	before := p.snapshot()
	for _, f := range []func() error{
		func() error { _, err := p.Append(c, 5); return err },
		func() error { _, err := p.Append(c, math.MaxInt); return err },
		func() error { _, _, err := p.Draft(c, []int{-1, -1, -1, -1, -1, -1, -1, -1, -1}); return err },
	} {
		err := f()
		var full *FullError
		require.ErrorAs(t, err, &full)
		require.ErrorIs(t, err, ErrPoolFull)
		require.Equal(t, 1, full.Free)
		require.Contains(t, err.Error(), "prune and retry")
		require.Equal(t, before, p.snapshot())
	}
	require.NoError(t, p.Prune(b))
	got, err := p.Append(c, 5)
	require.NoError(t, err)
	require.Len(t, got, 5)
	require.NoError(t, p.checkInvariants())
}

// TestDraftAcceptInPlace: a drafted token tree continues the sequence's
// last page; accepting the first-child chain moves nothing; the sequence
// continues right after the accepted tokens.
func TestDraftAcceptInPlace(t *testing.T) {
	p, _ := newPool(t, testConfig(treeattn.KVF32, 4, 8))
	s := p.NewSequence()
	_, err := p.Append(s, 3)
	require.NoError(t, err)
	// 0 -> 1 -> 2, and 3 (child of 0), 4 (child of s), 5 (child of 1).
	drafts, slots, err := p.Draft(s, []int{-1, 0, 1, 0, -1, 1})
	require.NoError(t, err)
	require.Equal(t, []int32{3, 4, 5, 6, 7, 8}, slots)
	_, err = p.Append(s, 1)
	require.Error(t, err)
	_, err = p.Fork(drafts[0])
	require.Error(t, err)
	_, err = p.Append(drafts[2], 1)
	require.Error(t, err)
	step, err := p.Tree(nil)
	require.NoError(t, err)
	require.Len(t, step.Queries, 6, "every drafted token is a query by default")
	path := []*Node{drafts[0], drafts[1], drafts[2]}
	n, err := p.CopiesFor(s, path)
	require.NoError(t, err)
	require.Zero(t, n)
	got, err := p.Accept(nil, s, path)
	require.NoError(t, err)
	require.Equal(t, []int32{3, 4, 5}, got)
	require.Equal(t, []int32{0, 1, 2, 3, 4, 5}, s.Slots())
	for _, d := range drafts {
		require.False(t, d.Live())
	}
	require.Equal(t, 8-2, p.FreePages(), "the tree's second page is released")
	next, err := p.Append(s, 2)
	require.NoError(t, err)
	require.Equal(t, []int32{6, 7}, next, "rejected slots are reused by the sequence")
	require.NoError(t, p.checkInvariants())

	// A path out of place needs the GPU (no recorder here).
	drafts, _, err = p.Draft(s, []int{-1, -1, 1})
	require.NoError(t, err)
	n, err = p.CopiesFor(s, []*Node{drafts[1], drafts[2]})
	require.NoError(t, err)
	require.Equal(t, 2, n)
	before := p.snapshot()
	_, err = p.Accept(nil, s, []*Node{drafts[1], drafts[2]})
	require.ErrorContains(t, err, "needs a recorder")
	require.Equal(t, before, p.snapshot())
	_, err = p.Accept(nil, s, []*Node{drafts[0], drafts[2]})
	require.ErrorContains(t, err, "not a child")
	// Rejecting everything hands the tree's slots back.
	_, err = p.Accept(nil, s, nil)
	require.NoError(t, err)
	next, err = p.Append(s, 1)
	require.NoError(t, err)
	require.Equal(t, []int32{8}, next)
	require.NoError(t, p.checkInvariants())

	// A host-only pool keeps the books without copying anything.
	h, err := NewHost(testConfig(treeattn.KVF32, 4, 8))
	require.NoError(t, err)
	require.Nil(t, h.K(0))
	s = h.NewSequence()
	_, err = h.Append(s, 3)
	require.NoError(t, err)
	drafts, _, err = h.Draft(s, []int{-1, -1, 1})
	require.NoError(t, err)
	got, err = h.Accept(nil, s, []*Node{drafts[1], drafts[2]})
	require.NoError(t, err)
	require.Equal(t, []int32{3, 4}, got)
	require.Equal(t, int64(2), h.Stats().MovedTokens)
	_, err = h.NewSlotList(got)
	require.ErrorContains(t, err, "no device memory")
	require.NoError(t, h.checkInvariants())
}

// TestAcceptMovesKV writes distinct K/V for every drafted token (and for a
// token tree of ordinary Fork/Append nodes), accepts paths that are out of
// place, and checks that the sequence's new slots hold the accepted tokens'
// rows, in both KV types.
func TestAcceptMovesKV(t *testing.T) {
	for _, kv := range []treeattn.KVType{treeattn.KVF32, treeattn.KVF16} {
		t.Run(kv.String(), func(t *testing.T) {
			p, d := newPool(t, testConfig(kv, 4, 32))
			rng := gputest.Rand(t)
			rec, err := d.NewRecorder()
			require.NoError(t, err)
			defer rec.Close()
			m := newModel(t, p, rng)
			m.d, m.rec, m.vals = d, rec, map[int][][2][]float32{}
			seq := m.add(p.NewSequence(), nil, false)
			slots, err := p.Append(seq.n, 5)
			require.NoError(t, err)
			m.write(slots, m.newTokens(seq, slots))

			// A drafted tree of 40 tokens: the chain of even tokens
			// 0 -> 2 -> 4 -> ... -> 38, each odd token a sibling branch
			// (2k+1 under 2k). Accepting the even chain moves 19 tokens,
			// more than one dispatch's 15.
			parents := make([]int, 40)
			parents[0] = -1
			for i := 1; i < 40; i++ {
				parents[i] = i - 1 - (1 - i%2)
			}
			nodes, dslots, err := p.Draft(seq.n, parents)
			require.NoError(t, err)
			var path []*mNode
			for i, dn := range nodes {
				par := seq
				if parents[i] >= 0 {
					par = m.by[nodes[parents[i]]]
				}
				x := m.add(dn, par, true)
				m.write(dslots[i:i+1], m.newTokens(x, dslots[i:i+1]))
			}
			for cur := m.by[nodes[0]]; ; {
				path = append(path, cur)
				var next *mNode
				for _, c := range cur.children {
					if c.n.pos%2 == 0 { // the even chain 0, 2, 4, ... is out of place
						next = c
					}
				}
				if next == nil {
					break
				}
				cur = next
			}
			require.Len(t, path, 20)
			m.acceptPath(seq, path)
			require.Equal(t, int64(19), p.Stats().MovedTokens)
			m.checkGPU([]treeattn.Method{treeattn.MethodFlatten}, treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 32})

			// A token tree of ordinary nodes (Fork + Append of 1 token,
			// as replayed workloads build it) is copied.
			var tree []*mNode
			for i := range 12 {
				par := seq
				if i > 0 {
					par = tree[rng.IntN(i)]
				}
				c, err := p.Fork(par.n)
				require.NoError(t, err)
				x := m.add(c, par, false)
				s, err := p.Append(c, 1+i%2)
				require.NoError(t, err)
				m.write(s, m.newTokens(x, s))
				tree = append(tree, x)
			}
			path = path[:0]
			for x := tree[len(tree)-1]; x != seq; x = x.parent {
				path = append([]*mNode{x}, path...)
			}
			m.acceptPath(seq, path)
			m.verify()
			m.checkGPU([]treeattn.Method{treeattn.MethodFlashDecoding}, treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 32})
		})
	}
}

// acceptPath accepts path into seq on the GPU and updates the model.
func (m *model) acceptPath(seq *mNode, path []*mNode) {
	t := m.t
	handles := make([]*Node, len(path))
	var toks []int
	for i, x := range path {
		handles[i] = x.n
		toks = append(toks, x.toks...)
	}
	require.NoError(t, m.rec.Reset())
	out, err := m.p.Accept(m.rec, seq.n, handles)
	require.NoError(t, err)
	require.NoError(t, m.rec.Submit())
	for _, c := range append([]*mNode(nil), seq.children...) {
		m.remove(c)
	}
	for i, tok := range toks {
		m.slot[tok] = out[i]
	}
	seq.toks = append(seq.toks, toks...)
	m.verify()
}

// TestWriteChecksSlots: Write and NewSlotList refuse slots outside the
// pool, repeated, or not allocated, and buffers too small.
func TestWriteChecksSlots(t *testing.T) {
	p, d := newPool(t, testConfig(treeattn.KVF16, 4, 4))
	s := p.NewSequence()
	slots, err := p.Append(s, 3)
	require.NoError(t, err)
	for _, bad := range [][]int32{{}, {0, 16}, {-1}, {1, 1}, {3}} {
		_, err := p.NewSlotList(bad)
		require.Error(t, err, "%v", bad)
		require.ErrorContains(t, err, "kvpool: new slot list")
	}
	sl, err := p.NewSlotList(slots)
	require.NoError(t, err)
	defer sl.Close()
	small, err := d.NewBuffer(4)
	require.NoError(t, err)
	defer small.Close()
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	require.ErrorContains(t, p.Write(rec, 0, sl, small, small), "need")
	require.ErrorContains(t, p.Write(rec, 2, sl, small, small), "layer outside")
	rope := RoPE{QHeads: 4, Dims: 32, Pos: small, InvFreq: small}
	require.ErrorContains(t, p.WriteRoPE(rec, 0, sl, small, small, small, rope), "need")
	require.ErrorContains(t, p.WriteRoPE(rec, 2, sl, small, small, small, rope), "layer outside")
	require.ErrorContains(t, p.WriteRoPE(rec, 0, sl, small, small, small, RoPE{QHeads: 4, Dims: 33, Pos: small, InvFreq: small}), "even")
	require.NoError(t, p.Prune(s))
	big, err := d.NewBuffer(3 * 64 * 4)
	require.NoError(t, err)
	defer big.Close()
	require.ErrorContains(t, p.Write(rec, 0, sl, big, big), "not allocated")
	require.ErrorContains(t, p.WriteRoPE(rec, 0, sl, big, big, big, RoPE{QHeads: 1, Dims: 32, Pos: big, InvFreq: big}), "not allocated")
}

// TestScatterConvertsToF16 writes values that need rounding into an fp16
// pool and compares with the host's round-to-nearest-even conversion
// (within one unit in the last place, as GLSL leaves the rounding mode
// open), and an fp32 pool bit for bit.
func TestScatterConvertsToF16(t *testing.T) {
	rng := gputest.Rand(t)
	for _, kv := range []treeattn.KVType{treeattn.KVF16, treeattn.KVF32} {
		p, d := newPool(t, testConfig(kv, 16, 4))
		s := p.NewSequence()
		slots, err := p.Append(s, 40)
		require.NoError(t, err)
		// Scatter in a shuffled order.
		rng.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })
		row := 2 * 32
		vals := [2][]float32{make([]float32, len(slots)*row), make([]float32, len(slots)*row)}
		var bufs [2]*vk.Buffer
		for w := range vals {
			for i := range vals[w] {
				vals[w][i] = float32(rng.NormFloat64() * 10)
			}
			bufs[w], err = d.NewBuffer(uint64(len(vals[w])) * 4)
			require.NoError(t, err)
			defer bufs[w].Close()
			require.NoError(t, bufs[w].WriteF32(0, vals[w]))
		}
		sl, err := p.NewSlotList(slots)
		require.NoError(t, err)
		rec, err := d.NewRecorder()
		require.NoError(t, err)
		require.NoError(t, p.Write(rec, 1, sl, bufs[0], bufs[1]))
		require.NoError(t, rec.Submit())
		rec.Close()
		sl.Close()
		exact := 0
		for w, b := range []*vk.Buffer{p.K(1), p.V(1)} {
			if kv == treeattn.KVF32 {
				got := make([]float32, p.NumSlots()*row)
				require.NoError(t, b.ReadF32(0, got))
				for i, slot := range slots {
					for j := range row {
						require.Equal(t, math.Float32bits(vals[w][i*row+j]), math.Float32bits(got[int(slot)*row+j]))
					}
				}
				continue
			}
			got := make([]uint16, p.NumSlots()*row)
			require.NoError(t, b.ReadF16(0, got))
			for i, slot := range slots {
				for j := range row {
					want := half.FromFloat32(vals[w][i*row+j])
					g := got[int(slot)*row+j]
					diff := int(want) - int(g)
					require.LessOrEqual(t, diff*diff, 1, "slot %d element %d: %#04x, want %#04x", slot, j, g, want)
					if diff == 0 {
						exact++
					}
				}
			}
		}
		if kv == treeattn.KVF16 {
			t.Logf("fp16: %d of %d values rounded exactly as round-to-nearest-even", exact, 2*len(slots)*row)
		}
	}
}

// TestTreeIsIncremental appends one token per step to a long sequence (and
// to 50 branches of a prompt) and checks that building the step's tree
// touches only the nodes that grew and shares the pool's slot lists
// instead of copying tokens.
func TestTreeIsIncremental(t *testing.T) {
	cfg := testConfig(treeattn.KVF16, 16, 2000)
	p, err := newHost(cfg)
	require.NoError(t, err)
	s := p.NewSequence()
	_, err = p.Append(s, 20000)
	require.NoError(t, err)
	_, err = p.Tree(nil)
	require.NoError(t, err)
	for step := range 200 {
		_, err := p.Append(s, 1)
		require.NoError(t, err)
		before := p.work.treeNodes
		st, err := p.Tree(nil)
		require.NoError(t, err)
		require.Equal(t, 1, p.work.treeNodes-before, "step %d", step)
		require.Equal(t, 20001+step, st.Tree.Nodes[0].Tokens)
		require.Equal(t, unsafe.SliceData(s.slots), unsafe.SliceData(st.Tree.Nodes[0].Slots), "slots are shared, not copied")
		require.Equal(t, []Query{{s, 20000 + step}}, st.Queries)
	}

	// Few-shot shape: a prompt and 50 branches decoding together.
	b := make([]*Node, 50)
	for i := range b {
		b[i], err = p.Fork(s)
		require.NoError(t, err)
	}
	for step := range 30 {
		for _, n := range b {
			_, err := p.Append(n, 1)
			require.NoError(t, err)
		}
		before := p.work.treeNodes
		st, err := p.Tree(nil)
		require.NoError(t, err)
		grew := p.work.treeNodes - before
		if step == 0 {
			require.Equal(t, 52, grew, "first step after the forks: one walk over root, prompt and branches")
		} else {
			require.Equal(t, 50, grew, "step %d", step)
		}
		require.Len(t, st.Tree.Nodes, 51)
		require.Len(t, st.Tree.Queries, 50)
		require.NoError(t, st.Tree.Validate(p.NumSlots()))
		for i, q := range st.Queries {
			require.Equal(t, q.Node.Len(), len(st.Tree.QuerySlots(i)))
		}
	}
	// An older step's tree stays valid: the pool only appends to slot lists.
	old, err := p.Tree(nil)
	require.NoError(t, err)
	oldSlots := old.Tree.QuerySlots(0)
	_, err = p.Append(b[0], 40)
	require.NoError(t, err)
	require.Equal(t, oldSlots, old.Tree.QuerySlots(0))
}

// TestTreeQueriesAndErrors covers explicit queries and the single-root rule.
func TestTreeQueriesAndErrors(t *testing.T) {
	p, err := newHost(testConfig(treeattn.KVF32, 4, 16))
	require.NoError(t, err)
	_, err = p.Tree(nil)
	require.ErrorContains(t, err, "no tokens")
	a := p.NewSequence()
	_, err = p.Append(a, 5)
	require.NoError(t, err)
	e, err := p.Fork(a) // a branch without tokens: its query is a's last token
	require.NoError(t, err)
	st, err := p.Tree(nil)
	require.NoError(t, err)
	require.Equal(t, []Query{{a, 4}}, st.Queries)
	require.Len(t, st.Tree.Nodes, 1)
	st, err = p.Tree([]Query{{a, 2}, Last(a)})
	require.NoError(t, err)
	require.Equal(t, []int32{0, 1, 2}, st.Tree.QuerySlots(0))
	_, err = p.Tree([]Query{{a, 5}})
	require.ErrorContains(t, err, "offset 5 outside")
	_, err = p.Tree([]Query{{e, 0}})
	require.ErrorContains(t, err, "offset 0 outside")
	b := p.NewSequence()
	_, err = p.Append(b, 1)
	require.NoError(t, err)
	_, err = p.Tree(nil)
	require.ErrorContains(t, err, "2 independent sequences")
	require.NoError(t, p.Prune(b))
	_, err = p.Tree([]Query{{b, 0}})
	require.ErrorIs(t, err, ErrPruned)
	other, err := newHost(testConfig(treeattn.KVF32, 4, 16))
	require.NoError(t, err)
	_, err = other.Append(a, 1)
	require.ErrorContains(t, err, "another pool")
}

// TestRandomOperationsMatchModel is the property test: random Fork, Append,
// Prune, Draft and Accept calls (and invalid ones) on small pools under
// memory pressure, checked after every call against a reference model:
// slots held once, page counts recomputed, free list exact, failed calls
// (ErrPoolFull included) leave the pool unchanged, trees match the model's
// sequences; at the end everything is pruned and the whole capacity is
// allocated again.
func TestRandomOperationsMatchModel(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	for _, pt := range []int{1, 3, 4, 16} {
		t.Run(fmt.Sprintf("page%d", pt), func(t *testing.T) {
			pages := 6 + rng.IntN(40)
			if pt == 16 {
				pages = 4 + rng.IntN(8)
			}
			p, err := New(d, testConfig(treeattn.KVF16, pt, pages))
			require.NoError(t, err)
			defer p.Close()
			m := newModel(t, p, rng)
			m.d, m.rec = d, rec
			m.run(1500)
			t.Logf("%d pages of %d tokens: %v", pages, pt, m)
			require.Positive(t, m.ops["append (pool full)"], "the run should hit a full pool")
			require.Positive(t, m.ops["accept (in place)"]+m.ops["accept (moved)"], "the run should accept drafts")
			for len(m.nodes) > 0 {
				mn := m.nodes[0]
				require.NoError(t, p.Prune(mn.n))
				m.remove(mn)
				m.verify()
			}
			require.Equal(t, p.NumPages(), p.FreePages())
			all, err := p.Append(p.NewSequence(), p.NumSlots())
			require.NoError(t, err, "freed pages are all reusable")
			require.Len(t, all, p.NumSlots())
			require.NoError(t, p.checkInvariants())
		})
	}
}

// TestAttentionOverPool runs random operations while writing every token's
// K/V through the scatter kernel (and moving accepted drafts on the GPU),
// then checks the pool's contents and tree attention over it against the
// float64 reference on the model's sequences, for both KV types.
func TestAttentionOverPool(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	shape := treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 32}
	for _, tc := range []struct {
		kv treeattn.KVType
		pt int
	}{{treeattn.KVF32, 4}, {treeattn.KVF16, 3}} {
		t.Run(tc.kv.String(), func(t *testing.T) {
			p, err := New(d, testConfig(tc.kv, tc.pt, 96))
			require.NoError(t, err)
			defer p.Close()
			m := newModel(t, p, rng)
			m.d, m.rec, m.vals, m.oneTop = d, rec, map[int][][2][]float32{}, true
			// Check whenever the tree has grown to several nodes (drafts
			// included), at least every 40 operations.
			checks, biggest := 0, 0
			methods := [][]treeattn.Method{
				{treeattn.MethodFlatten, treeattn.MethodFlashDecoding},
				{treeattn.MethodNodeChunk, treeattn.MethodDenseMask},
			}
			for op, since := 0, 0; op < 600 && checks < 4; op++ {
				m.step()
				since++
				if m.roots() != 1 || since < 40 || len(m.nodes) < 6 {
					continue
				}
				m.checkGPU(methods[checks%2], shape)
				checks++
				biggest = max(biggest, len(m.nodes))
				since = 0
			}
			t.Logf("%d checks, largest with %d nodes; %v", checks, biggest, m)
			require.GreaterOrEqual(t, checks, 2)
			require.Positive(t, m.ops["accept (moved)"]+m.ops["accept (ordinary nodes)"], "some accepts should move K/V")
		})
	}
}

// Step.Layout stays while steps only append, and changes with every fork,
// prune, draft and accept; a step of the same Layout extends the one
// before (what treeattn.Planner.PlanNext is promised).
func TestTreeLayout(t *testing.T) {
	p, err := NewHost(testConfig(treeattn.KVF32, 4, 64))
	require.NoError(t, err)
	s := p.NewSequence()
	_, err = p.Append(s, 10)
	require.NoError(t, err)
	last, err := p.Tree(nil)
	require.NoError(t, err)
	step := func(change string, op func()) {
		t.Helper()
		op()
		st, err := p.Tree(nil)
		require.NoError(t, err)
		if change == "" {
			require.Equal(t, last.Layout, st.Layout, "appending keeps the layout")
			require.True(t, treeattn.Extends(last.Tree, st.Tree), "a step of the same layout extends the last")
		} else {
			require.NotEqual(t, last.Layout, st.Layout, "%s changes the layout", change)
		}
		last = st
	}
	must := func(_ any, err error) { require.NoError(t, err) }
	step("", func() { must(p.Append(s, 3)) })
	var a, b *Node
	step("fork", func() {
		a, err = p.Fork(s)
		require.NoError(t, err)
		b, err = p.Fork(s)
		require.NoError(t, err)
		must(p.Append(a, 1))
		must(p.Append(b, 1))
	})
	step("", func() { must(p.Append(a, 2)); must(p.Append(b, 1)) })
	step("", func() { must(p.Append(a, 1)) })
	step("prune", func() { require.NoError(t, p.Prune(b)) })
	step("", func() { must(p.Append(a, 5)) })
	var drafts []*Node
	step("draft", func() { drafts, _, err = p.Draft(a, []int{-1, 0, -1}); require.NoError(t, err) })
	step("accept", func() { must(p.Accept(nil, a, []*Node{drafts[0], drafts[1]})) })
	step("", func() { must(p.Append(a, 1)) })
}

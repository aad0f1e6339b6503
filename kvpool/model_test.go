package kvpool

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// mNode is the reference model of a pool node: its parent and the logical
// tokens (model ids) it holds.
type mNode struct {
	n        *Node
	parent   *mNode // nil for a top-level sequence
	toks     []int
	children []*mNode
	draft    bool
}

// model replays random operations on a pool and on a simple logical model
// side by side, checking after each that they agree.
type model struct {
	t     *testing.T
	p     *Pool
	rng   *rand.Rand
	nodes []*mNode
	by    map[*Node]*mNode
	slot  map[int]int32 // token -> slot
	next  int
	stale []*Node // pruned handles
	ops   map[string]int

	// GPU mode: every token's K/V rows are written through the pool and
	// kept here, [layer][k|v][kv_head*dim].
	d      *vk.Device
	rec    *vk.Recorder
	vals   map[int][][2][]float32
	oneTop bool // keep a single top-level sequence (attention needs one root)
}

func newModel(t *testing.T, p *Pool, rng *rand.Rand) *model {
	return &model{t: t, p: p, rng: rng, by: map[*Node]*mNode{}, slot: map[int]int32{}, ops: map[string]int{}}
}

func (m *model) add(n *Node, parent *mNode, draft bool) *mNode {
	mn := &mNode{n: n, parent: parent, draft: draft}
	if parent != nil {
		parent.children = append(parent.children, mn)
	}
	m.nodes = append(m.nodes, mn)
	m.by[n] = mn
	return mn
}

func (m *model) remove(mn *mNode) {
	for _, c := range slices.Clone(mn.children) {
		m.remove(c)
	}
	if mn.parent != nil {
		mn.parent.children = slices.DeleteFunc(mn.parent.children, func(c *mNode) bool { return c == mn })
	}
	m.nodes = slices.DeleteFunc(m.nodes, func(c *mNode) bool { return c == mn })
	delete(m.by, mn.n)
	m.stale = append(m.stale, mn.n)
}

func (m *model) pick(ok func(*mNode) bool) *mNode {
	var c []*mNode
	for _, mn := range m.nodes {
		if ok(mn) {
			c = append(c, mn)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[m.rng.IntN(len(c))]
}

func (m *model) newTokens(mn *mNode, slots []int32) []int {
	toks := make([]int, len(slots))
	for i, s := range slots {
		m.next++
		toks[i] = m.next
		m.slot[m.next] = s
	}
	mn.toks = append(mn.toks, toks...)
	return toks
}

func (m *model) topLevel() int {
	k := 0
	for _, mn := range m.nodes {
		if mn.parent == nil {
			k++
		}
	}
	return k
}

// run applies n random operations.
func (m *model) run(n int) {
	for range n {
		m.step()
	}
}

// step applies one random operation (sometimes a deliberately invalid one)
// and checks the outcome.
func (m *model) step() {
	t := m.t
	before := m.p.snapshot()
	name, invalid, err := m.randomOp()
	m.ops[name]++
	if err != nil {
		require.Equal(t, before, m.p.snapshot(), "failed %s changed the pool: %v", name, err)
		var full *FullError
		if errors.As(err, &full) {
			require.False(t, invalid, "%s: %v", name, err)
			require.ErrorIs(t, err, ErrPoolFull)
			require.Greater(t, full.Need, full.Free, "%v", err)
			require.Equal(t, m.p.FreePages(), full.Free, "%v", err)
			m.ops[name+" (pool full)"]++
		} else {
			require.True(t, invalid, "%s failed: %v", name, err)
		}
	} else {
		require.False(t, invalid, "invalid %s succeeded", name)
	}
	m.verify()
}

func (m *model) randomOp() (string, bool, error) {
	p, rng := m.p, m.rng
	pt := p.pageTokens
	switch r := rng.IntN(100); {
	case r < 4 || len(m.nodes) == 0:
		if m.oneTop && m.topLevel() > 0 {
			return m.appendOp(pt)
		}
		m.add(p.NewSequence(), nil, false)
		return "new sequence", false, nil
	case r < 18:
		mn := m.pick(func(x *mNode) bool { return !x.draft && !hasDrafts(x) && !m.emptyTop(x) })
		if mn == nil {
			return m.appendOp(pt)
		}
		c, err := p.Fork(mn.n)
		if err == nil {
			m.add(c, mn, false)
		}
		return "fork", false, err
	case r < 48:
		return m.appendOp(pt)
	case r < 60:
		mn := m.pick(func(*mNode) bool { return true })
		if m.oneTop && mn.parent == nil && rng.IntN(4) > 0 {
			mn = m.pick(func(x *mNode) bool { return x.parent != nil })
			if mn == nil {
				return m.appendOp(pt)
			}
		}
		err := p.Prune(mn.n)
		if err == nil {
			m.remove(mn)
		}
		return "prune", false, err
	case r < 72:
		mn := m.pick(func(x *mNode) bool { return !x.draft && len(x.children) == 0 && !m.emptyTop(x) })
		if mn == nil {
			return m.appendOp(pt)
		}
		parents := make([]int, 1+rng.IntN(3*pt))
		for i := range parents {
			parents[i] = -1
			if i > 0 && rng.IntN(5) > 0 {
				parents[i] = rng.IntN(i)
			}
		}
		nodes, slots, err := p.Draft(mn.n, parents)
		if err == nil {
			require.Len(m.t, slots, len(parents))
			for i, d := range nodes {
				par := mn
				if parents[i] >= 0 {
					par = m.by[nodes[parents[i]]]
				}
				dn := m.add(d, par, true)
				toks := m.newTokens(dn, slots[i:i+1])
				m.write(slots[i:i+1], toks)
			}
		}
		return "draft", false, err
	case r < 88:
		mn := m.pick(func(x *mNode) bool { return !x.draft && len(x.children) > 0 })
		if mn == nil {
			return m.appendOp(pt)
		}
		var path []*mNode
		for cur := mn; len(cur.children) > 0 && (cur == mn || rng.IntN(5) > 0); {
			cur = cur.children[rng.IntN(len(cur.children))]
			path = append(path, cur)
		}
		invalid := false
		if len(path) > 2 && rng.IntN(10) == 0 {
			path = append(path[:1], path[2:]...) // skip a level: not a chain
			invalid = true
		}
		handles := make([]*Node, len(path))
		var toks []int
		for i, x := range path {
			handles[i] = x.n
			toks = append(toks, x.toks...)
		}
		drafts := hasDrafts(mn)
		moves, perr := p.CopiesFor(mn.n, handles)
		if m.rec != nil {
			require.NoError(m.t, m.rec.Reset())
		}
		out, err := p.Accept(m.rec, mn.n, handles)
		require.Equal(m.t, perr == nil, err == nil, "CopiesFor and Accept disagree: %v / %v", perr, err)
		if err == nil {
			if m.rec != nil {
				require.NoError(m.t, m.rec.Submit())
			}
			name := "accept (ordinary nodes)"
			switch {
			case drafts && moves > 0:
				name = "accept (moved)"
			case drafts:
				name = "accept (in place)"
			}
			require.Len(m.t, out, len(toks))
			for _, c := range slices.Clone(mn.children) {
				m.remove(c)
			}
			for i, tok := range toks {
				m.slot[tok] = out[i]
			}
			mn.toks = append(mn.toks, toks...)
			return name, false, nil
		}
		return "accept", invalid, err
	case r < 94 && len(m.stale) > 0:
		n := m.stale[rng.IntN(len(m.stale))]
		_, err := p.Append(n, 1)
		require.ErrorIs(m.t, err, ErrPruned)
		return "append to pruned node", true, err
	default:
		// Invalid on purpose: grow a node with children, fork a draft.
		if mn := m.pick(func(x *mNode) bool { return len(x.children) > 0 }); mn != nil && rng.IntN(2) == 0 {
			_, err := p.Append(mn.n, 1)
			return "append to node with children", true, err
		}
		if mn := m.pick(func(x *mNode) bool { return x.draft || hasDrafts(x) }); mn != nil {
			_, err := p.Fork(mn.n)
			return "fork draft", true, err
		}
		return m.appendOp(pt)
	}
}

// emptyTop: in oneTop mode a top-level sequence without tokens gets no
// children, so the pool's tree keeps a single root.
func (m *model) emptyTop(x *mNode) bool { return m.oneTop && x.parent == nil && len(x.toks) == 0 }

// roots counts the nodes with tokens and no ancestor with tokens: the roots
// of the pool's tree.
func (m *model) roots() int {
	roots := 0
	for _, mn := range m.nodes {
		if len(mn.toks) > 0 {
			top := true
			for x := mn.parent; x != nil; x = x.parent {
				top = top && len(x.toks) == 0
			}
			if top {
				roots++
			}
		}
	}
	return roots
}

func hasDrafts(x *mNode) bool { return len(x.children) > 0 && x.children[0].draft }

func (m *model) appendOp(pt int) (string, bool, error) {
	mn := m.pick(func(x *mNode) bool { return !x.draft && len(x.children) == 0 })
	if mn == nil {
		if m.oneTop && m.topLevel() > 0 {
			return "nothing to append to", false, nil
		}
		m.add(m.p.NewSequence(), nil, false)
		return "new sequence", false, nil
	}
	k := 1 + m.rng.IntN(2*pt+2)
	if m.rng.IntN(8) == 0 {
		k = 1 + m.rng.IntN(m.p.NumSlots()/3)
	}
	slots, err := m.p.Append(mn.n, k)
	if err == nil {
		require.Len(m.t, slots, k)
		toks := m.newTokens(mn, slots)
		m.write(slots, toks)
	}
	return "append", false, err
}

// pathSlots is the slots of every token a query at (mn, offset) sees.
func (m *model) pathSlots(mn *mNode, offset int) []int32 {
	var chain []*mNode
	for x := mn.parent; x != nil; x = x.parent {
		chain = append(chain, x)
	}
	slices.Reverse(chain)
	var out []int32
	for _, x := range chain {
		for _, tok := range x.toks {
			out = append(out, m.slot[tok])
		}
	}
	for _, tok := range mn.toks[:offset+1] {
		out = append(out, m.slot[tok])
	}
	return out
}

func (m *model) leaves(mn *mNode) int {
	if len(mn.children) == 0 {
		return 1
	}
	k := 0
	for _, c := range mn.children {
		k += m.leaves(c)
	}
	return k
}

func (m *model) pathLen(mn *mNode) int {
	k := 0
	for x := mn; x != nil; x = x.parent {
		k += len(x.toks)
	}
	return k
}

// verify checks the pool against the model.
func (m *model) verify() {
	t, p := m.t, m.p
	require.NoError(t, p.checkInvariants())
	pt := int32(p.pageTokens)
	held := map[int32]int{}
	var want Stats
	shared := map[int32]bool{}
	for _, mn := range m.nodes {
		n := mn.n
		require.True(t, n.Live(), "%v", n)
		require.Equal(t, mn.draft, n.IsDraft(), "%v", n)
		if mn.parent == nil {
			require.Nil(t, n.Parent(), "%v", n)
		} else {
			require.Same(t, mn.parent.n, n.Parent(), "%v", n)
		}
		var slots []int32
		for _, tok := range mn.toks {
			s := m.slot[tok]
			slots = append(slots, s)
			held[s]++
			require.Equal(t, 1, held[s], "slot %d held twice", s)
		}
		require.Equal(t, slots, n.Slots(), "%v", n)
		require.Equal(t, m.pathLen(mn), n.Len(), "%v", n)
		want.Tokens += len(mn.toks)
		if len(mn.children) == 0 {
			want.Sequences++
			want.LogicalTokens += m.pathLen(mn)
		} else if m.leaves(mn) >= 2 {
			for _, s := range slots {
				shared[s/pt] = true
			}
		}
	}
	for _, n := range m.stale {
		require.False(t, n.Live())
	}
	st := p.Stats()
	require.Equal(t, len(m.nodes), st.Nodes)
	require.Equal(t, want.Tokens, st.Tokens)
	require.Equal(t, want.Sequences, st.Sequences)
	require.Equal(t, want.LogicalTokens, st.LogicalTokens)
	require.Equal(t, len(shared), st.PagesShared)
	require.Equal(t, st.Pages, st.PagesInUse+st.PagesFree)
	require.LessOrEqual(t, uint64(st.Pages)*st.PageBytes, p.cfg.BudgetBytes, "budget")
	// Every page in use holds a live token or is reserved by a live node
	// (checkInvariants): nothing leaks.
	require.LessOrEqual(t, st.PagesInUse, want.Tokens+len(m.nodes))
	m.verifyTree()
}

// verifyTree checks Tree(nil) against the model's logical sequences.
func (m *model) verifyTree() {
	t, p := m.t, m.p
	roots := m.roots()
	type q struct{ id, off int }
	var wantQ []q
	seen := map[q]bool{}
	for _, mn := range m.nodes {
		if mn.draft || len(mn.children) == 0 {
			x := mn
			for x != nil && len(x.toks) == 0 {
				x = x.parent
			}
			if x != nil && !seen[q{x.n.id, len(x.toks) - 1}] {
				seen[q{x.n.id, len(x.toks) - 1}] = true
				wantQ = append(wantQ, q{x.n.id, len(x.toks) - 1})
			}
		}
	}
	step, err := p.Tree(nil)
	if roots != 1 {
		require.Error(t, err, "%d roots", roots)
		return
	}
	require.NoError(t, err)
	require.NoError(t, step.Tree.Validate(p.NumSlots()))
	require.Len(t, step.Queries, len(step.Tree.Queries))
	var gotQ []q
	for i, pq := range step.Queries {
		mn := m.by[pq.Node]
		require.NotNil(t, mn)
		require.Equal(t, m.pathSlots(mn, pq.Offset), step.Tree.QuerySlots(i), "query %d at %v offset %d", i, pq.Node, pq.Offset)
		gotQ = append(gotQ, q{pq.Node.id, pq.Offset})
	}
	require.ElementsMatch(t, wantQ, gotQ)
	for i, n := range step.Nodes {
		require.Equal(t, n.Slots(), step.Tree.Nodes[i].Slots)
	}
}

// write stores random K/V rows for new tokens through the pool (GPU mode).
func (m *model) write(slots []int32, toks []int) {
	if m.vals == nil {
		return
	}
	t, p := m.t, m.p
	cfg := p.cfg
	row := cfg.KVHeads * cfg.HeadDim
	sl, err := p.NewSlotList(slots)
	require.NoError(t, err)
	defer sl.Close()
	require.NoError(t, m.rec.Reset())
	var bufs []*vk.Buffer
	defer func() {
		for _, b := range bufs {
			b.Close()
		}
	}()
	for _, tok := range toks {
		m.vals[tok] = make([][2][]float32, cfg.Layers)
	}
	for l := range cfg.Layers {
		var kv [2]*vk.Buffer
		for w := range kv {
			dense := make([]float32, len(toks)*row)
			for i, tok := range toks {
				r := randomRow(m.rng, row, cfg.KV)
				m.vals[tok][l][w] = r
				copy(dense[i*row:], r)
			}
			b, err := m.d.NewBuffer(uint64(len(dense)) * 4)
			require.NoError(t, err)
			bufs = append(bufs, b)
			require.NoError(t, b.WriteF32(0, dense))
			kv[w] = b
		}
		require.NoError(t, p.Write(m.rec, l, sl, kv[0], kv[1]))
	}
	require.NoError(t, m.rec.Submit())
}

// randomRow draws normal values, exactly representable in the KV type.
func randomRow(rng *rand.Rand, n int, kv treeattn.KVType) []float32 {
	r := make([]float32, n)
	for i := range r {
		r[i] = float32(rng.NormFloat64())
		if kv == treeattn.KVF16 {
			r[i] = half.ToFloat32(half.FromFloat32(r[i]))
		}
	}
	return r
}

// readPool reads one layer's K or V as float32 [slot][row].
func readPool(t *testing.T, p *Pool, b *vk.Buffer) []float32 {
	n := p.NumSlots() * p.cfg.KVHeads * p.cfg.HeadDim
	if p.cfg.KV == treeattn.KVF16 {
		bits := make([]uint16, n)
		require.NoError(t, b.ReadF16(0, bits))
		return half.ToFloat32Slice(bits)
	}
	out := make([]float32, n)
	require.NoError(t, b.ReadF32(0, out))
	return out
}

// checkGPU reads the pool back and compares every live token's rows with
// what was written, then runs tree attention over the pool and compares it
// with the float64 reference on the model's sequences.
func (m *model) checkGPU(methods []treeattn.Method, shape treeattn.Shape) {
	t, p := m.t, m.p
	cfg := p.cfg
	row := cfg.KVHeads * cfg.HeadDim
	host := make([][2][]float32, cfg.Layers)
	for l := range cfg.Layers {
		for w, b := range []*vk.Buffer{p.K(l), p.V(l)} {
			got := readPool(t, p, b)
			want := make([]float32, len(got))
			for _, mn := range m.nodes {
				for _, tok := range mn.toks {
					s := int(m.slot[tok])
					copy(want[s*row:], m.vals[tok][l][w])
					require.Equal(t, want[s*row:(s+1)*row], got[s*row:(s+1)*row], "layer %d %s of token %d at slot %d", l, "KV"[w:w+1], tok, s)
				}
			}
			host[l][w] = want
		}
	}
	step, err := p.Tree(nil)
	require.NoError(t, err)
	nq := len(step.Tree.Queries)
	qv := make([]float32, nq*shape.QHeads*shape.HeadDim)
	for i := range qv {
		qv[i] = float32(m.rng.NormFloat64())
	}
	qb, err := m.d.NewBuffer(uint64(len(qv)) * 4)
	require.NoError(t, err)
	defer qb.Close()
	require.NoError(t, qb.WriteF32(0, qv))
	out, err := m.d.NewBuffer(uint64(len(qv)) * 4)
	require.NoError(t, err)
	defer out.Close()
	for _, method := range methods {
		plan, err := treeattn.NewPlan(step.Tree, treeattn.Config{Method: method, Shape: shape, KV: cfg.KV, Limits: treeattn.LimitsOf(m.d.Info)})
		require.NoError(t, err)
		dp, err := plan.Upload(m.d)
		require.NoError(t, err)
		for l := range cfg.Layers {
			want, err := treeattn.Reference(step.Tree, shape, qv, host[l][0], host[l][1], plan.Scale)
			require.NoError(t, err)
			require.NoError(t, out.FillF32(0, uint64(len(qv)), float32(math.NaN())))
			require.NoError(t, m.rec.Reset())
			require.NoError(t, dp.Run(m.rec, qb, p.K(l), p.V(l), out))
			require.NoError(t, m.rec.Submit())
			got := make([]float32, len(qv))
			require.NoError(t, out.ReadF32(0, got))
			rel := treeattn.RelativeL2(got, want)
			tol := cfg.KV.Tolerance()
			require.LessOrEqual(t, rel, tol, "%s layer %d: relative L2 error %.3g", method, l, rel)
			m.t.Logf("%s %s layer %d: %d nodes, %d queries, %d tokens: relative L2 %.2g", method, cfg.KV, l,
				len(step.Tree.Nodes), nq, step.Tree.TotalTokens(), rel)
		}
		dp.Close()
	}
}

func (m *model) String() string {
	keys := make([]string, 0, len(m.ops))
	for k := range m.ops {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := ""
	for _, k := range keys {
		s += fmt.Sprintf("%s: %d; ", k, m.ops[k])
	}
	return s
}

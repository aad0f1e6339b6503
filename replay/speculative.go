package replay

import (
	"errors"
	"fmt"

	"github.com/deft-vk/deft/treeattn"
)

// SpeculativePrefix is the default committed prefix of the speculative
// workload (DeFT's evaluation uses about 1000 tokens).
const SpeculativePrefix = 1000

// MaxSpeculativeSteps bounds SpecOptions.Steps.
const MaxSpeculativeSteps = 1 << 20

// SpecOptions configures NewSpeculative. Zero fields take the defaults
// noted.
type SpecOptions struct {
	// Prefix is the number of committed tokens before the first token
	// tree, appended by the prefill step. Default SpeculativePrefix.
	Prefix int
	// Record is the index of the accept-length record (one per prompt)
	// that the replay starts with.
	Record int
	// Steps is the number of speculative steps. Default: the length of
	// the record's accept lengths. More steps than that continue with the
	// following records' accept lengths, wrapping around to record 0.
	Steps int
}

// Speculative replays speculative decoding with a Medusa-style token tree
// and recorded accept lengths.
//
// Node 0 is the committed sequence. Step 0 (Prefill) forks it, appends the
// prefix and queries its last token. Each later step k builds the token
// tree below node 0 (as in SpecTree.TreeWithPrefix): token i is a
// new one-token node, forked from node 0 for token 0 (the implicit root,
// the last accepted token, whose K/V the step computes) and from token
// Parents[i] otherwise, and every token is a query at offset 0, in token
// order. Node ids are fresh every step. The step's After accepts a tokens
// along the best-first path (token 0, then at each level the child ranked
// best, i.e. with the smallest last entry of its candidate path): a is the
// step's recorded accept length, which counts the token-tree root, clamped
// to [1, length of the best-first path]. The accepted tokens become
// committed tokens of node 0 and the rest of the token tree is released.
// The last step's After also prunes node 0.
type Speculative struct {
	spec    *SpecTree
	opts    SpecOptions
	accepts []int // clamped accept length of each speculative step
	best    []int // token indices of the best-first path
	clamped int
	next    int
	nextID  int
	ids     []int // node id of each token of the current token tree
	ops     []Op
	after   []Op
	qs      []Query
	path    []int
}

// NewSpeculative returns the speculative workload over token tree s (from
// ParseSpeculativeJSON), which must have at least one non-empty
// accept-length record. The final sequence, prefix plus accepted tokens
// plus a token tree, must fit treeattn.MaxTreeTokens.
func NewSpeculative(s *SpecTree, opts SpecOptions) (*Speculative, error) {
	w, err := newSpeculative(s, opts)
	if err != nil {
		return nil, fmt.Errorf("speculative workload: %w", err)
	}
	return w, nil
}

func newSpeculative(s *SpecTree, opts SpecOptions) (*Speculative, error) {
	if s == nil || s.Size() < 1 {
		return nil, errors.New("empty token tree")
	}
	n := s.Size()
	if n >= treeattn.MaxTreeNodes || n > treeattn.MaxTreeQueries {
		return nil, fmt.Errorf("token tree of %d tokens exceeds the tree limits", n)
	}
	children := make([][]int, n)
	for i, p := range s.Parents {
		switch {
		case i == 0 && p != -1, i > 0 && (p < 0 || p >= i), i > 0 && len(s.Paths) < i, i > 0 && len(s.Paths[i-1]) == 0:
			return nil, fmt.Errorf("token %d: inconsistent token tree (not from ParseSpeculativeJSON)", i)
		}
		if i > 0 {
			children[p] = append(children[p], i)
		}
	}
	best := []int{0}
	for t := 0; len(children[t]) > 0; {
		c := children[t][0]
		for _, d := range children[t][1:] {
			if lastEntry(s.Paths[d-1]) < lastEntry(s.Paths[c-1]) {
				c = d
			}
		}
		best = append(best, c)
		t = c
	}

	if opts.Prefix == 0 {
		opts.Prefix = SpeculativePrefix
	}
	switch {
	case opts.Prefix < 1:
		return nil, fmt.Errorf("prefix %d, must be at least 1", opts.Prefix)
	case opts.Record < 0 || opts.Record >= len(s.AcceptLengths):
		return nil, fmt.Errorf("record %d does not exist (the token tree has %d accept-length records)", opts.Record, len(s.AcceptLengths))
	case len(s.AcceptLengths[opts.Record]) == 0:
		return nil, fmt.Errorf("record %d has no accept lengths", opts.Record)
	case opts.Steps < 0 || opts.Steps > MaxSpeculativeSteps:
		return nil, fmt.Errorf("steps %d outside [0, %d]", opts.Steps, MaxSpeculativeSteps)
	}
	if opts.Steps == 0 {
		opts.Steps = len(s.AcceptLengths[opts.Record])
	}
	w := &Speculative{spec: s, opts: opts, best: best, nextID: 1, ids: make([]int, n)}
	w.accepts = make([]int, 0, opts.Steps)
	total := opts.Prefix
	for r := opts.Record; len(w.accepts) < opts.Steps; r = (r + 1) % len(s.AcceptLengths) {
		for _, a := range s.AcceptLengths[r] {
			if len(w.accepts) == opts.Steps {
				break
			}
			c := min(max(a, 1), len(best))
			if c != a {
				w.clamped++
			}
			w.accepts = append(w.accepts, c)
			total += c
		}
	}
	if total > treeattn.MaxTreeTokens-n {
		return nil, fmt.Errorf("prefix %d and %d steps reach %d tokens, more than the limit %d", opts.Prefix, opts.Steps, total+n, treeattn.MaxTreeTokens)
	}
	return w, nil
}

func lastEntry(p []int) int { return p[len(p)-1] }

// Name returns "speculative-t<tokens>-P<prefix>-r<record>-S<steps>".
func (w *Speculative) Name() string {
	return fmt.Sprintf("speculative-t%d-P%d-r%d-S%d", w.spec.Size(), w.opts.Prefix, w.opts.Record, w.opts.Steps)
}

// Len returns the number of steps: the prefill plus the speculative steps.
func (w *Speculative) Len() int { return len(w.accepts) + 1 }

// AcceptLengths returns the accept length used at each speculative step
// (step k uses element k-1), after clamping.
func (w *Speculative) AcceptLengths() []int { return w.accepts }

// Clamped returns how many recorded accept lengths were clamped to [1,
// length of the best-first path].
func (w *Speculative) Clamped() int { return w.clamped }

// BestPath returns the token indices of the best-first path, token 0
// first: the tokens a step accepts, in order.
func (w *Speculative) BestPath() []int { return w.best }

// Committed returns the committed tokens that step k's queries see, for
// 0 <= k <= Len(): the prefix plus the tokens accepted by steps 1..k-1.
// Committed(Len()) is the final length of the sequence.
func (w *Speculative) Committed(k int) int {
	n := w.opts.Prefix
	for _, a := range w.accepts[:max(k-1, 0)] {
		n += a
	}
	return n
}

// Next implements Workload.
func (w *Speculative) Next() (Step, bool) {
	k := w.next
	if k > len(w.accepts) {
		return Step{}, false
	}
	w.next++
	w.ops, w.after, w.qs = w.ops[:0], w.after[:0], w.qs[:0]
	st := Step{Index: k}
	if k == 0 {
		st.Prefill = true
		w.ops = append(w.ops, Op{Kind: OpFork, Node: 0, Parent: NoParent}, Op{Kind: OpAppend, Node: 0, Tokens: w.opts.Prefix})
		w.qs = append(w.qs, Query{Node: 0, Offset: w.opts.Prefix - 1})
	} else {
		for i, p := range w.spec.Parents {
			id := w.nextID
			w.nextID++
			w.ids[i] = id
			parent := 0
			if i > 0 {
				parent = w.ids[p]
			}
			w.ops = append(w.ops, Op{Kind: OpFork, Node: id, Parent: parent}, Op{Kind: OpAppend, Node: id, Tokens: 1})
			w.qs = append(w.qs, Query{Node: id})
		}
		a := w.accepts[k-1]
		w.path = w.path[:0]
		for _, t := range w.best[:a] {
			w.path = append(w.path, w.ids[t])
		}
		w.after = append(w.after, Op{Kind: OpAccept, Node: 0, Tokens: a, Path: w.path})
	}
	if k == len(w.accepts) {
		w.after = append(w.after, Op{Kind: OpPrune, Node: 0})
	}
	st.Ops, st.Queries, st.After = orNil(w.ops), orNil(w.qs), orNil(w.after)
	return st, true
}

package generate

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/sample"
	"github.com/deft-vk/deft/tokenizer"
)

// SpecOptions configure Speculative.
type SpecOptions struct {
	MaxTokens int // tokens to generate at most (> 0)
	Sample    sample.Params
	Drafter   Drafter   // nil: no drafts (one token per step, as Plain)
	Shape     TreeShape // the drafted trees' template
}

// SpecStep is one speculative step: one forward pass of the target.
type SpecStep struct {
	Drafted  int           `json:"drafted"`  // draft tokens verified (the root not counted)
	Accepted int           `json:"accepted"` // draft tokens accepted
	Tokens   int           `json:"tokens"`   // tokens the step added: the accepted ones and the target's next token
	Draft    time.Duration `json:"-"`        // drafting
	Verify   time.Duration `json:"-"`        // the target's pass, sampling and committing the path
}

// SpecResult is what Speculative produced.
type SpecResult struct {
	Result
	Steps []SpecStep
	Err   string // why a StopPoolFull generation ended
}

// MeanAccepted is the acceptance length: accepted draft tokens per step.
func (r *SpecResult) MeanAccepted() float64 {
	if len(r.Steps) == 0 {
		return 0
	}
	n := 0
	for _, s := range r.Steps {
		n += s.Accepted
	}
	return float64(n) / float64(len(r.Steps))
}

// TokensPerStep is the tokens each forward pass of the target added after
// the prompt's (1 for plain decoding).
func (r *SpecResult) TokensPerStep() float64 {
	if len(r.Steps) == 0 {
		return 0
	}
	n := 0
	for _, s := range r.Steps {
		n += s.Tokens
	}
	return float64(n) / float64(len(r.Steps))
}

// AcceptanceRate is the share of drafted tokens accepted.
func (r *SpecResult) AcceptanceRate() float64 {
	d, a := 0, 0
	for _, s := range r.Steps {
		d += s.Drafted
		a += s.Accepted
	}
	if d == 0 {
		return 0
	}
	return float64(a) / float64(d)
}

// SpecBudget is the KV tokens Speculative needs: the sequence and one
// drafted tree of shape beyond it (its pages continue the sequence's).
func SpecBudget(cfg model.Config, prompt, maxTokens int, shape TreeShape, pageTokens int) int {
	return pageRound(Budget(cfg, prompt, maxTokens)+len(shape.Parents)+1, pageTokens) + pageTokens
}

// Speculative is speculative decoding with token trees: each step drafts a
// tree of candidate tokens after the last accepted token (opts.Drafter,
// filling opts.Shape), places the last accepted token and the tree with
// kvpool.Draft, and verifies all of them in one forward pass of the
// target, whose logits at every tree token say what the target itself
// would generate next there. It walks down from the root: it samples the
// target's next token from the node's logits with the generation's one
// sampler, exactly as Plain would at that position; when a child holds
// that token it is accepted and the walk goes on from it, otherwise the
// sampled token ends the step as the next root. The accepted path is
// committed with kvpool.Accept and the rest of the tree released.
//
// Every token is thus drawn from the target's own distribution in the
// same order as Plain draws it, so at temperature 0 the output is plain
// greedy decoding and at any temperature it is Plain's output for the same
// seed (up to the rounding of a different batch). This rule is exact for
// any drafter; for drafters that propose fixed tokens, as both here do, it
// also accepts as often as the speculative-sampling rejection rule of tree
// drafts (which accepts child x with probability p(x)/q(x) = p(x) for a
// point-mass draft distribution q and then renormalises p without x: the
// chance that some child is accepted is the sum of their p either way).
//
// The prompt and the text are streamed to out as by Plain (nil: not
// written). A tree that does not fit the pool is dropped for the root
// alone; when even that does not fit the generation ends with
// StopPoolFull.
func Speculative(m *model.Model, tok *tokenizer.Tokenizer, pool *kvpool.Pool, prompt []int32, opts SpecOptions, out io.Writer) (*SpecResult, error) {
	if err := checkRun(prompt, opts.MaxTokens); err != nil {
		return nil, err
	}
	if err := opts.Shape.Check(); err != nil {
		return nil, err
	}
	smp, err := sample.New(opts.Sample)
	if err != nil {
		return nil, err
	}
	cfg := m.Config()
	rec, err := m.Device().NewRecorder()
	if err != nil {
		return nil, fmt.Errorf("generate: speculative: %w", err)
	}
	defer rec.Close()
	stream := NewStream(tok, out)
	for _, id := range prompt {
		if _, err := stream.Push(id); err != nil {
			return nil, err
		}
	}
	res := &SpecResult{Result: Result{Prompt: prompt}}
	seq := pool.NewSequence()
	defer pool.Prune(seq) // drafted trees too
	start := time.Now()
	logits, err := m.Eval(pool, seq, prompt)
	if err != nil {
		return nil, fmt.Errorf("generate: speculative: prompt: %w", err)
	}
	res.Prefill = time.Since(start)
	ctx := append([]int32{}, prompt...)

	// next samples a token from logits and records it; it reports whether
	// the generation stops.
	next := func(logits []float32) (int32, bool, error) {
		id, err := smp.Sample(logits)
		if err != nil {
			return 0, false, err
		}
		if isEnd(tok, cfg, id) {
			res.Stop = StopEOS
			return id, true, nil
		}
		t := Token{ID: id, LogProb: sample.LogProb(logits, id)}
		if t.Text, err = stream.Push(id); err != nil {
			return 0, false, err
		}
		res.Tokens = append(res.Tokens, t)
		ctx = append(ctx, id)
		switch {
		case len(res.Tokens) >= opts.MaxTokens:
			res.Stop = StopLength
		case cfg.ContextLen > 0 && len(prompt)+len(res.Tokens) >= cfg.ContextLen:
			res.Stop = StopContext
		}
		return id, res.Stop != "", nil
	}
	t0 := time.Now()
	root, stop, err := next(logits)
	if err != nil {
		return nil, err
	}
	if len(res.Tokens) > 0 {
		res.Tokens[0].Elapsed = res.Prefill + time.Since(t0)
	}
	for !stop {
		st := SpecStep{}
		t0 := time.Now()
		// A path of d accepted tokens adds d+1 tokens; its deepest
		// token's position must stay in the context.
		maxDepth := opts.MaxTokens - len(res.Tokens) - 1
		if cfg.ContextLen > 0 {
			maxDepth = min(maxDepth, cfg.ContextLen-len(ctx))
		}
		var tree DraftTree
		if opts.Drafter != nil && maxDepth > 0 {
			if tree, err = opts.Drafter.Draft(ctx, opts.Shape, maxDepth); err != nil {
				return nil, err
			}
		}
		t1 := time.Now()
		st.Draft = t1.Sub(t0)

		// The root and the tree, depth-first with each node's children
		// in the drafter's order (best first), so that a path of best
		// candidates is already in place for Accept.
		order, parents, tokens := dfsOrder(tree, root)
		nodes, _, err := pool.Draft(seq, parents)
		if errors.Is(err, kvpool.ErrPoolFull) && len(parents) > 1 {
			order, parents, tokens = order[:1], parents[:1], tokens[:1]
			nodes, _, err = pool.Draft(seq, parents)
		}
		if err != nil {
			if !errors.Is(err, kvpool.ErrPoolFull) {
				return nil, fmt.Errorf("generate: speculative: %w", err)
			}
			res.Stop, res.Err = StopPoolFull, err.Error()
			break
		}
		st.Drafted = len(order) - 1
		queries := make([]kvpool.Query, len(nodes))
		rows := make([]int, len(nodes))
		children := make([][]int, len(nodes))
		for i, n := range nodes {
			queries[i], rows[i] = kvpool.Query{Node: n}, i
			if i > 0 {
				children[parents[i]] = append(children[parents[i]], i)
			}
		}
		step, err := pool.Tree(queries)
		if err != nil {
			return nil, fmt.Errorf("generate: speculative: %w", err)
		}
		got, err := m.Forward(pool, model.Batch{Tokens: tokens, Step: step, LogitRows: rows})
		if err != nil {
			return nil, fmt.Errorf("generate: speculative: step %d: %w", len(res.Steps)+1, err)
		}
		// Walk down the tree as far as the target agrees.
		first := len(res.Tokens)
		path := []*kvpool.Node{nodes[0]}
		cur := 0
		for {
			id, end, err := next(got[cur])
			if err != nil {
				return nil, err
			}
			if end {
				stop = true
				break
			}
			child := -1
			for _, c := range children[cur] {
				if tokens[c] == id {
					child = c
					break
				}
			}
			if child < 0 {
				root = id
				break
			}
			cur = child
			path = append(path, nodes[child])
			st.Accepted++
		}
		st.Tokens = len(res.Tokens) - first
		if !stop {
			if err := rec.Reset(); err != nil {
				return nil, fmt.Errorf("generate: speculative: %w", err)
			}
			copies, err := pool.CopiesFor(seq, path)
			if err != nil {
				return nil, fmt.Errorf("generate: speculative: %w", err)
			}
			if _, err := pool.Accept(rec, seq, path); err != nil {
				return nil, fmt.Errorf("generate: speculative: %w", err)
			}
			if copies > 0 {
				if err := rec.Submit(); err != nil {
					return nil, fmt.Errorf("generate: speculative: accept: %w", err)
				}
			}
		}
		st.Verify = time.Since(t1)
		// The step's time, split evenly among the tokens it added.
		if st.Tokens > 0 {
			each := (st.Draft + st.Verify) / time.Duration(st.Tokens)
			for i := first; i < len(res.Tokens); i++ {
				res.Tokens[i].Elapsed = each
			}
		}
		res.Steps = append(res.Steps, st)
	}
	if _, err := stream.Flush(); err != nil {
		return nil, err
	}
	return res, nil
}

// dfsOrder lays out root and tree for kvpool.Draft: index 0 is root, the
// drafted tokens follow depth-first (children in tree order). It returns
// each entry's index in tree (-1 for the root), its parent entry and its
// token.
func dfsOrder(tree DraftTree, root int32) (order, parents []int, tokens []int32) {
	kids := make([][]int, tree.Len()+1) // by tree index + 1
	for i, p := range tree.Parents {
		kids[p+1] = append(kids[p+1], i)
	}
	type frame struct{ tree, parent int }
	stack := []frame{{-1, -1}}
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		idx := len(order)
		order = append(order, f.tree)
		parents = append(parents, f.parent)
		if f.tree < 0 {
			tokens = append(tokens, root)
		} else {
			tokens = append(tokens, tree.Tokens[f.tree])
		}
		ks := kids[f.tree+1]
		for i := len(ks) - 1; i >= 0; i-- {
			stack = append(stack, frame{ks[i], idx})
		}
	}
	return order, parents, tokens
}

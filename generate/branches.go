package generate

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/sample"
	"github.com/deft-vk/deft/tokenizer"
)

// BranchOptions configure Branches.
type BranchOptions struct {
	Branches  int // continuations of the prompt (>= 1)
	MaxTokens int // tokens per branch at most (> 0)
	// Sample is every branch's sampling; its Seed is the base seed, and
	// branch i samples with BranchSeed(Seed, i).
	Sample sample.Params
}

// BranchSeed is the seed of branch i: seed + i (mod 2^64). Branch i's
// tokens are those of Plain with this seed (deft generate --seed S+i), so
// branch 0 repeats the plain run with the same --seed.
func BranchSeed(seed uint64, i int) uint64 { return seed + uint64(i) }

// Branch is one continuation.
type Branch struct {
	Index  int     `json:"index"`
	Seed   uint64  `json:"seed"`
	Tokens []Token `json:"tokens"` // the EOS token that stopped it is not included
	Stop   string  `json:"stop"`
	// Err says why a StopPoolFull branch ended (the pool's error).
	Err string `json:"error,omitempty"`
}

// BranchesResult is what Branches produced.
type BranchesResult struct {
	Prompt   []int32
	Branches []Branch // by index
	Prefill  time.Duration
	Steps    []StepStat // one per forward pass after the prompt
}

// BranchesBudget is the KV tokens Branches needs to run every branch to
// maxTokens (or the model's context): the prompt and each branch in whole
// pages, as forked branches start on fresh pages.
func BranchesBudget(cfg model.Config, prompt, branches, maxTokens, pageTokens int) int {
	per := Budget(cfg, prompt, maxTokens) - prompt
	return pageRound(prompt, pageTokens) + branches*pageRound(per, pageTokens)
}

// branch is a live branch's decoding state.
type branch struct {
	*Branch
	node   *kvpool.Node
	smp    *sample.Sampler
	stream *Stream
	next   int32 // sampled, to be evaluated
}

// Branches decodes opts.Branches sampled continuations of one prompt as a
// tree in pool: the prompt is evaluated once, each branch forks from it
// (sharing its KV pages), and every step is one forward pass over the last
// token of every live branch. A branch that ends (EOS, MaxTokens, the
// model's context) is pruned at once and its pages freed; a branch whose
// next token does not fit the pool ends with StopPoolFull while the others
// go on. Branch i samples with its own stream, BranchSeed(Sample.Seed, i).
//
// The prompt's text is written to out, then each branch's continuation as
// it ends, every line of it labelled "[branch i] " (nil: not written).
func Branches(m *model.Model, tok *tokenizer.Tokenizer, pool *kvpool.Pool, prompt []int32, opts BranchOptions, out io.Writer) (*BranchesResult, error) {
	if err := checkRun(prompt, opts.MaxTokens); err != nil {
		return nil, err
	}
	if opts.Branches < 1 {
		return nil, fmt.Errorf("generate: branches: %d branches", opts.Branches)
	}
	if err := opts.Sample.Check(); err != nil {
		return nil, err
	}
	cfg := m.Config()
	if err := writePrompt(tok, prompt, out); err != nil {
		return nil, err
	}
	res := &BranchesResult{Prompt: prompt, Branches: make([]Branch, opts.Branches)}
	seq := pool.NewSequence()
	defer pool.Prune(seq) // the whole tree: a failed run frees its pages too
	start := time.Now()
	logits, err := m.Eval(pool, seq, prompt)
	if err != nil {
		return nil, fmt.Errorf("generate: branches: prompt: %w", err)
	}
	res.Prefill = time.Since(start)

	live := make([]*branch, opts.Branches)
	for i := range live {
		b := &branch{Branch: &res.Branches[i]}
		b.Index, b.Seed, b.Tokens = i, BranchSeed(opts.Sample.Seed, i), []Token{}
		sp := opts.Sample
		sp.Seed = b.Seed
		if b.smp, err = sample.New(sp); err != nil {
			return nil, err
		}
		if b.node, err = pool.Fork(seq); err != nil {
			return nil, fmt.Errorf("generate: branches: %w", err)
		}
		b.stream = NewStream(tok, nil)
		for _, id := range prompt {
			b.stream.Push(id) // no writer: cannot fail
		}
		live[i] = b
	}
	// finish ends a branch: prune its node and print it.
	finish := func(b *branch, stop string) error {
		b.Stop = stop
		if err := pool.Prune(b.node); err != nil {
			return fmt.Errorf("generate: branches: %w", err)
		}
		return writeLabelled(out, "branch", b.Index, b.Tokens, b.stream)
	}

	rows := make([][]float32, len(live))
	for i := range rows {
		rows[i] = logits // every branch starts from the prompt's logits
	}
	fwd := res.Prefill
	for len(live) > 0 {
		// Sample every live branch's next token; end those that stop.
		kept := live[:0]
		for i, b := range live {
			t0 := time.Now()
			id, err := b.smp.Sample(rows[i])
			if err != nil {
				return nil, err
			}
			stop := ""
			if isEnd(tok, cfg, id) {
				stop = StopEOS
			} else {
				t := Token{ID: id, LogProb: sample.LogProb(rows[i], id)}
				if t.Text, err = b.stream.Push(id); err != nil {
					return nil, err
				}
				t.Elapsed = fwd + time.Since(t0)
				b.Tokens = append(b.Tokens, t)
				b.next = id
				switch {
				case len(b.Tokens) >= opts.MaxTokens:
					stop = StopLength
				case cfg.ContextLen > 0 && b.node.Len()+1 >= cfg.ContextLen:
					stop = StopContext
				}
			}
			if stop != "" {
				if err := finish(b, stop); err != nil {
					return nil, err
				}
				continue
			}
			kept = append(kept, b)
		}
		live = kept
		// Room for each next token, in branch order; a branch that does
		// not fit ends alone (Append changes nothing on failure), and its
		// pages may let later branches fit.
		kept = live[:0]
		for _, b := range live {
			if _, err := pool.Append(b.node, 1); err != nil {
				if !errors.Is(err, kvpool.ErrPoolFull) {
					return nil, fmt.Errorf("generate: branches: %w", err)
				}
				b.Err = err.Error()
				if err := finish(b, StopPoolFull); err != nil {
					return nil, err
				}
				continue
			}
			kept = append(kept, b)
		}
		live = kept
		if len(live) == 0 {
			break
		}
		t1 := time.Now()
		queries := make([]kvpool.Query, len(live))
		tokens := make([]int32, len(live))
		want := make([]int, len(live))
		for i, b := range live {
			queries[i], tokens[i], want[i] = kvpool.Last(b.node), b.next, i
		}
		step, err := pool.Tree(queries)
		if err != nil {
			return nil, fmt.Errorf("generate: branches: %w", err)
		}
		if rows, err = m.Forward(pool, model.Batch{Tokens: tokens, Step: step, LogitRows: want}); err != nil {
			return nil, fmt.Errorf("generate: branches: step %d: %w", len(res.Steps)+1, err)
		}
		fwd = time.Since(t1)
		res.Steps = append(res.Steps, StepStat{Queries: len(live), Elapsed: fwd})
	}
	return res, nil
}

// writePrompt writes the prompt's text, as Plain echoes it, and a newline
// to out (nil: nothing).
func writePrompt(tok *tokenizer.Tokenizer, prompt []int32, out io.Writer) error {
	if out == nil {
		return nil
	}
	s := NewStream(tok, out)
	for _, id := range prompt {
		if _, err := s.Push(id); err != nil {
			return err
		}
	}
	if _, err := s.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(out); err != nil {
		return fmt.Errorf("generate: write output: %w", err)
	}
	return nil
}

// writeLabelled writes text as "[label i] line" lines to out (nil:
// nothing), where text is the tokens' texts and what stream still holds.
// Every line of a text that holds newlines gets the label, as GNU
// parallel's --tag does, so interleaved branches stay attributable and
// grep-able line by line.
func writeLabelled(out io.Writer, label string, i int, tokens []Token, stream *Stream) error {
	rest, _ := stream.Flush() // no writer: cannot fail
	if out == nil {
		return nil
	}
	var b strings.Builder
	for _, line := range strings.Split(Text(tokens)+rest, "\n") {
		fmt.Fprintf(&b, "[%s %d] %s\n", label, i, line)
	}
	if _, err := io.WriteString(out, b.String()); err != nil {
		return fmt.Errorf("generate: write output: %w", err)
	}
	return nil
}

package generate

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/tokenizer"
	"github.com/deft-vk/deft/vk"
)

// LengthAlpha is the exponent of beam search's length normalisation: a
// beam's score is its summed log-probability / length^LengthAlpha.
const LengthAlpha = 1.0

// BeamOptions configure Beams.
type BeamOptions struct {
	Beams     int // beam width K (>= 1)
	MaxTokens int // tokens per beam at most (> 0)
	// EndTokens end a beam like EOS, besides the model's end-of-generation
	// tokens (llama2.c's models, such as stories260K, end a story with BOS).
	EndTokens []int32
}

// Beam is one finished hypothesis of beam search.
type Beam struct {
	Tokens []Token `json:"tokens"` // the EOS token that ended it is not included
	Stop   string  `json:"stop"`
	// EOSLogProb is the log-probability of the EOS token that ended the
	// beam (Stop == StopEOS), else 0.
	EOSLogProb float64 `json:"eos_logprob"`
	// SumLogProb is the sum of the tokens' log-probabilities and
	// EOSLogProb; Length counts those tokens (the EOS included).
	SumLogProb float64 `json:"sum_logprob"`
	Length     int     `json:"length"`
	// Score is SumLogProb / Length^LengthAlpha (alpha = 1: the mean
	// log-probability per token).
	Score float64 `json:"score"`
	Err   string  `json:"error,omitempty"` // why a StopPoolFull beam ended
}

// BeamsResult is what Beams produced.
type BeamsResult struct {
	Prompt  []int32
	Beams   []Beam // best (highest Score) first
	Prefill time.Duration
	Steps   []StepStat // one per forward pass after the prompt
}

// BeamsBudget is the KV tokens Beams usually needs: the prompt, K beams
// of maxTokens, and a page of slack for each of the 2K nodes a tree with K
// leaves has at most (forked beams start on fresh pages). Chains of nodes
// left by pruned beams can need more; a beam that does not fit ends with
// StopPoolFull.
func BeamsBudget(cfg model.Config, prompt, beams, maxTokens, pageTokens int) int {
	per := Budget(cfg, prompt, maxTokens) - prompt
	return pageRound(prompt, pageTokens) + beams*per + 2*beams*pageTokens
}

// hyp is a live beam.
type hyp struct {
	node   *kvpool.Node
	ids    []int32
	lps    []float64
	sum    float64
	logits []float32 // of the next token
	elapse []time.Duration
}

// beamCand is a one-token extension of a live beam.
type beamCand struct {
	from    int // index in the live beams
	id      int32
	lp, sum float64
}

// Beams runs beam search with K = opts.Beams beams over a tree in pool:
// the prompt is evaluated once; at each step every live beam proposes its
// top tokens by log-probability, and the best extensions by summed
// log-probability (all live beams have the same length, so this is also
// the order of their normalised scores) become the next live beams. An
// extension that picks EOS ends as a finished beam and the beam width left
// for the live ones shrinks by one, so the search ends with K beams, each
// ended by EOS, MaxTokens, the model's context or a full pool. Beams are
// tree nodes: a beam extended once appends to its node, a beam extended
// several times forks one child per extension (sharing its pages), a
// dropped beam is pruned with the ancestors only it used, and a beam left
// the only child of its parent is merged into it (kvpool.Accept copies its
// rows) so that the tree keeps few partly used pages. Each step is one
// forward pass over the live beams' new tokens.
//
// The prompt's text, then the best beam's continuation, are written to out
// (nil: not written).
func Beams(m *model.Model, tok *tokenizer.Tokenizer, pool *kvpool.Pool, prompt []int32, opts BeamOptions, out io.Writer) (*BeamsResult, error) {
	if err := checkRun(prompt, opts.MaxTokens); err != nil {
		return nil, err
	}
	if opts.Beams < 1 {
		return nil, fmt.Errorf("generate: beams: %d beams", opts.Beams)
	}
	cfg := m.Config()
	rec, err := m.Device().NewRecorder()
	if err != nil {
		return nil, fmt.Errorf("generate: beams: %w", err)
	}
	defer rec.Close()
	res := &BeamsResult{Prompt: prompt}
	seq := pool.NewSequence()
	defer pool.Prune(seq)
	start := time.Now()
	logits, err := m.Eval(pool, seq, prompt)
	if err != nil {
		return nil, fmt.Errorf("generate: beams: prompt: %w", err)
	}
	res.Prefill = time.Since(start)
	fwd := res.Prefill

	var finished []Beam
	finish := func(h *hyp, stop string, eosLP float64) {
		b := Beam{Stop: stop, EOSLogProb: eosLP, SumLogProb: h.sum, Length: len(h.ids)}
		if stop == StopEOS {
			b.Length++
		}
		b.Score = b.SumLogProb / math.Pow(float64(b.Length), LengthAlpha)
		b.Tokens = make([]Token, len(h.ids))
		for i, id := range h.ids {
			b.Tokens[i] = Token{ID: id, LogProb: h.lps[i], Elapsed: h.elapse[i]}
		}
		finished = append(finished, b)
	}
	// drop prunes a node no beam uses, and its ancestors left without
	// children (the prompt stays).
	drop := func(n *kvpool.Node) error {
		for n != nil && n != seq && len(n.Children()) == 0 {
			parent := n.Parent()
			if err := pool.Prune(n); err != nil {
				return fmt.Errorf("generate: beams: %w", err)
			}
			n = parent
		}
		return nil
	}

	live := []*hyp{{node: seq, logits: logits}}
	for len(live) > 0 {
		t0 := time.Now()
		width := opts.Beams - len(finished)
		var cands []beamCand
		for i, h := range live {
			for _, c := range topLogProbs(h.logits, width) {
				cands = append(cands, beamCand{from: i, id: c.id, lp: c.lp, sum: h.sum + c.lp})
			}
		}
		// Best first; ties in beam then token order, for repeatable runs.
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].sum > cands[j].sum })
		cands = cands[:min(width, len(cands))]

		ext := make([][]*hyp, len(live)) // the extensions to evaluate, per beam
		for _, c := range cands {
			h := live[c.from]
			if isEnd(tok, cfg, c.id) || slices.Contains(opts.EndTokens, c.id) {
				finish(&hyp{ids: h.ids, lps: h.lps, sum: c.sum, elapse: h.elapse}, StopEOS, c.lp)
				continue
			}
			nh := &hyp{ids: append(slices.Clip(h.ids), c.id), lps: append(slices.Clip(h.lps), c.lp), sum: c.sum,
				elapse: append(slices.Clip(h.elapse), fwd)}
			switch {
			case len(nh.ids) >= opts.MaxTokens:
				finish(nh, StopLength, 0)
			case cfg.ContextLen > 0 && len(prompt)+len(nh.ids) >= cfg.ContextLen:
				finish(nh, StopContext, 0)
			default:
				ext[c.from] = append(ext[c.from], nh)
			}
		}
		// Free the dropped beams first, then merge lone children into
		// their parents, then place the new tokens.
		for i, h := range live {
			if len(ext[i]) == 0 {
				if err := drop(h.node); err != nil {
					return nil, err
				}
			}
		}
		if err := compact(pool, rec, live, ext); err != nil {
			return nil, err
		}
		var next []*hyp
		for i, h := range live {
			if len(ext[i]) == 0 {
				continue // dropped above
			}
			if len(ext[i]) == 1 && len(h.node.Children()) == 0 {
				nh := ext[i][0]
				if _, err := pool.Append(h.node, 1); err != nil {
					if !errors.Is(err, kvpool.ErrPoolFull) {
						return nil, fmt.Errorf("generate: beams: %w", err)
					}
					finish(nh, StopPoolFull, 0)
					finished[len(finished)-1].Err = err.Error()
					if err := drop(h.node); err != nil {
						return nil, err
					}
					continue
				}
				nh.node = h.node
				next = append(next, nh)
				continue
			}
			for _, nh := range ext[i] {
				child, err := pool.Fork(h.node)
				if err != nil {
					return nil, fmt.Errorf("generate: beams: %w", err)
				}
				if _, err := pool.Append(child, 1); err != nil {
					if !errors.Is(err, kvpool.ErrPoolFull) {
						return nil, fmt.Errorf("generate: beams: %w", err)
					}
					finish(nh, StopPoolFull, 0)
					finished[len(finished)-1].Err = err.Error()
					if err := drop(child); err != nil {
						return nil, err
					}
					continue
				}
				nh.node = child
				next = append(next, nh)
			}
			if len(h.node.Children()) == 0 {
				if err := drop(h.node); err != nil { // every fork failed
					return nil, err
				}
			}
		}
		live = next
		if len(live) == 0 {
			break
		}
		queries := make([]kvpool.Query, len(live))
		tokens := make([]int32, len(live))
		rows := make([]int, len(live))
		for i, h := range live {
			queries[i], tokens[i], rows[i] = kvpool.Last(h.node), h.ids[len(h.ids)-1], i
		}
		step, err := pool.Tree(queries)
		if err != nil {
			return nil, fmt.Errorf("generate: beams: %w", err)
		}
		t1 := time.Now()
		got, err := m.Forward(pool, model.Batch{Tokens: tokens, Step: step, LogitRows: rows})
		if err != nil {
			return nil, fmt.Errorf("generate: beams: step %d: %w", len(res.Steps)+1, err)
		}
		fwd = time.Since(t1)
		for i, h := range live {
			h.logits = got[i]
		}
		res.Steps = append(res.Steps, StepStat{Queries: len(live), Elapsed: time.Since(t0)})
	}

	sort.SliceStable(finished, func(i, j int) bool { return finished[i].Score > finished[j].Score })
	for i := range finished {
		b := &finished[i]
		s := NewStream(tok, nil)
		for _, id := range prompt {
			s.Push(id) // no writer: cannot fail
		}
		for j := range b.Tokens {
			b.Tokens[j].Text, _ = s.Push(b.Tokens[j].ID)
		}
		if rest, _ := s.Flush(); rest != "" && len(b.Tokens) > 0 {
			b.Tokens[len(b.Tokens)-1].Text += rest
		}
	}
	res.Beams = finished
	if out != nil {
		if err := writePrompt(tok, prompt, out); err != nil {
			return nil, err
		}
		if len(finished) > 0 {
			if _, err := fmt.Fprintln(out, Text(finished[0].Tokens)); err != nil {
				return nil, fmt.Errorf("generate: write output: %w", err)
			}
		}
	}
	return res, nil
}

// compact merges each extended beam that is a leaf and the only child of
// its parent into the parent (repeatedly, up the tree), so that lines of
// beams do not keep one partly used page per fork. kvpool.Accept copies
// the leaf's K/V rows into the parent's pages; the copies run before
// anything else writes to the pool. A merge that does not fit the pool is
// skipped (Accept changes nothing then).
func compact(pool *kvpool.Pool, rec *vk.Recorder, live []*hyp, ext [][]*hyp) error {
	if err := rec.Reset(); err != nil {
		return fmt.Errorf("generate: beams: %w", err)
	}
	copies := 0
	for i, h := range live {
		if len(ext[i]) == 0 {
			continue
		}
		for {
			n, parent := h.node, h.node.Parent()
			if parent == nil || len(n.Children()) > 0 || len(parent.Children()) != 1 {
				break
			}
			c, err := pool.CopiesFor(parent, []*kvpool.Node{n})
			if err != nil {
				if errors.Is(err, kvpool.ErrPoolFull) {
					break
				}
				return fmt.Errorf("generate: beams: %w", err)
			}
			if _, err := pool.Accept(rec, parent, []*kvpool.Node{n}); err != nil {
				return fmt.Errorf("generate: beams: merge: %w", err)
			}
			copies += c
			h.node = parent
		}
	}
	if copies > 0 {
		if err := rec.Submit(); err != nil {
			return fmt.Errorf("generate: beams: merge: %w", err)
		}
	}
	return nil
}

// tokenLP is a token and its log-probability.
type tokenLP struct {
	id int32
	lp float64
}

// topLogProbs returns the k most likely tokens of logits (ties: lower id
// first, as greedy sampling picks) with their log-probabilities, as
// sample.LogProb computes them.
func topLogProbs(logits []float32, k int) []tokenLP {
	top := math.Inf(-1)
	for _, l := range logits {
		top = math.Max(top, float64(l))
	}
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(float64(l) - top)
	}
	lse := top + math.Log(sum)
	k = min(k, len(logits))
	best := make([]int32, 0, k+1) // by decreasing logit, ties by id
	for i, l := range logits {
		if len(best) == k && l <= logits[best[k-1]] {
			continue
		}
		j := len(best)
		for j > 0 && l > logits[best[j-1]] {
			j--
		}
		best = slices.Insert(best, j, int32(i))
		if len(best) > k {
			best = best[:k]
		}
	}
	out := make([]tokenLP, len(best))
	for i, id := range best {
		out[i] = tokenLP{id: id, lp: float64(logits[id]) - lse}
	}
	return out
}

// Package generate holds the decoding loops built on package model, one
// file per mode: Plain decodes one sequence; Branches decodes several
// sampled continuations of one prompt as a tree (branches.go); Beams is
// beam search over a tree of beams (beams.go); Speculative verifies a
// drafted token tree in one forward pass per step (speculative.go, with the
// drafters in draft.go). Every tree mode shares the prompt's KV pages and
// evaluates all of a step's new tokens in one Model.Forward. The parts that
// do not depend on the mode (prompt checks, sampling with package sample,
// streaming whole UTF-8 characters with tokenizer.Streamer, per-step
// timing) are separate functions.
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

// Stop reasons of a generation.
const (
	StopEOS     = "eos"     // the model produced an end-of-generation token
	StopLength  = "length"  // MaxTokens were generated
	StopContext = "context" // the sequence filled the model's context
	// StopPoolFull: the KV pool had no room for the sequence's next token
	// (kvpool.ErrPoolFull); the tree modes end that branch or beam alone.
	StopPoolFull = "pool-full"
)

// StepStat is one decoding step of a tree mode: one forward pass.
type StepStat struct {
	Queries int           `json:"queries"` // tokens the pass evaluated
	Elapsed time.Duration `json:"-"`       // the step: host work, the forward pass and sampling
}

// isEnd reports whether id ends a generation (end-of-generation or EOS).
func isEnd(tok *tokenizer.Tokenizer, cfg model.Config, id int32) bool {
	return tok.IsEOG(id) || id == cfg.EOS
}

// checkRun validates what every mode needs.
func checkRun(prompt []int32, maxTokens int) error {
	if maxTokens < 1 {
		return fmt.Errorf("generate: %d tokens to generate", maxTokens)
	}
	if len(prompt) == 0 {
		return errors.New("generate: empty prompt")
	}
	return nil
}

// pageRound rounds n tokens up to whole pages of pt tokens.
func pageRound(n, pt int) int { return (n + pt - 1) / pt * pt }

// Token is one generated token.
type Token struct {
	ID      int32         `json:"id"`
	Text    string        `json:"text"`    // the text it completed (whole UTF-8 characters; may be empty)
	LogProb float64       `json:"logprob"` // the model's log-probability of the token (temperature 1, untruncated)
	Elapsed time.Duration `json:"-"`       // the forward pass that gave its logits, and sampling
}

// Result is what a generation produced.
type Result struct {
	Prompt  []int32
	Tokens  []Token // the EOS token that stopped it is not included
	Stop    string
	Prefill time.Duration // the prompt's forward pass
}

// Options configure Plain.
type Options struct {
	MaxTokens int // tokens to generate at most (> 0)
	Sample    sample.Params
}

// Text is the text of tokens (their Text fields joined).
func Text(tokens []Token) string {
	var s strings.Builder
	for _, t := range tokens {
		s.WriteString(t.Text)
	}
	return s.String()
}

// Prompt encodes text (BOS first when the model wants it) and checks it
// against the model: not empty, within the trained context.
func Prompt(tok *tokenizer.Tokenizer, cfg model.Config, text string) ([]int32, error) {
	ids := tok.Encode(text, tok.AddBOS())
	if len(ids) == 0 {
		return nil, errors.New("generate: the prompt is empty and the model adds no BOS token")
	}
	if cfg.ContextLen > 0 && len(ids) >= cfg.ContextLen {
		return nil, fmt.Errorf("generate: the prompt has %d tokens; the model's context is %d tokens (room is needed for at least one more)",
			len(ids), cfg.ContextLen)
	}
	return ids, nil
}

// Budget is the tokens a sequence of prompt tokens plus maxTokens new ones
// needs in the KV pool, capped by the model's context.
func Budget(cfg model.Config, prompt, maxTokens int) int {
	n := prompt + maxTokens
	if cfg.ContextLen > 0 {
		n = min(n, cfg.ContextLen)
	}
	return n
}

// Stream writes generated text as it completes whole UTF-8 characters.
type Stream struct {
	s *tokenizer.Streamer
	w io.Writer
}

// NewStream streams the text of ids pushed to it into w (nil: nowhere).
func NewStream(tok *tokenizer.Tokenizer, w io.Writer) *Stream {
	return &Stream{s: tok.NewStreamer(), w: w}
}

// Push adds an id and writes and returns the text it completes.
func (s *Stream) Push(id int32) (string, error) {
	text := s.s.Push(id)
	if s.w != nil && text != "" {
		if _, err := io.WriteString(s.w, text); err != nil {
			return text, fmt.Errorf("generate: write output: %w", err)
		}
	}
	return text, nil
}

// Flush writes and returns what is left of an unfinished character.
func (s *Stream) Flush() (string, error) {
	text := s.s.Flush()
	if s.w != nil && text != "" {
		if _, err := io.WriteString(s.w, text); err != nil {
			return text, fmt.Errorf("generate: write output: %w", err)
		}
	}
	return text, nil
}

// Plain decodes one sequence in pool: it evaluates the prompt, then samples
// a token and evaluates it until an end-of-generation token, MaxTokens or
// the model's context. The prompt's text and then the generated text are
// streamed to out (nil: not written).
func Plain(m *model.Model, tok *tokenizer.Tokenizer, pool *kvpool.Pool, prompt []int32, opts Options, out io.Writer) (*Result, error) {
	if err := checkRun(prompt, opts.MaxTokens); err != nil {
		return nil, err
	}
	smp, err := sample.New(opts.Sample)
	if err != nil {
		return nil, err
	}
	cfg := m.Config()
	if need := Budget(cfg, len(prompt), opts.MaxTokens); pool.NumSlots() < need {
		return nil, fmt.Errorf("generate: the KV pool holds %d tokens; the prompt (%d tokens) and %d new ones need %d",
			pool.NumSlots(), len(prompt), opts.MaxTokens, need)
	}
	stream := NewStream(tok, out)
	for _, id := range prompt {
		if _, err := stream.Push(id); err != nil {
			return nil, err
		}
	}
	res := &Result{Prompt: prompt}
	seq := pool.NewSequence()
	defer pool.Prune(seq)
	start := time.Now()
	logits, err := m.Eval(pool, seq, prompt)
	if err != nil {
		return nil, fmt.Errorf("generate: prompt: %w", err)
	}
	res.Prefill = time.Since(start)
	fwd := res.Prefill
	for {
		t0 := time.Now()
		id, err := smp.Sample(logits)
		if err != nil {
			return nil, err
		}
		if isEnd(tok, cfg, id) {
			res.Stop = StopEOS
			break
		}
		t := Token{ID: id, LogProb: sample.LogProb(logits, id), Elapsed: fwd + time.Since(t0)}
		if t.Text, err = stream.Push(id); err != nil {
			return nil, err
		}
		res.Tokens = append(res.Tokens, t)
		switch {
		case len(res.Tokens) >= opts.MaxTokens:
			res.Stop = StopLength
		case cfg.ContextLen > 0 && seq.Len()+1 >= cfg.ContextLen:
			res.Stop = StopContext
		}
		if res.Stop != "" {
			break
		}
		t1 := time.Now()
		if logits, err = m.Eval(pool, seq, []int32{id}); err != nil {
			return nil, fmt.Errorf("generate: token %d: %w", len(res.Tokens), err)
		}
		fwd = time.Since(t1)
	}
	if _, err := stream.Flush(); err != nil {
		return nil, err
	}
	return res, nil
}

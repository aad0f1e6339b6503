// Package sample picks the next token from a model's logits: greedy
// (temperature 0) or random, truncated by top-k, top-p and min-p. As in
// llama.cpp's default chain, the truncations look at the model's own
// probabilities (softmax of the logits) in this order, and the temperature
// then shapes the distribution over the tokens that remain.
package sample

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// Params configure a Sampler. The zero value is greedy.
type Params struct {
	Temp float64 // 0: greedy (argmax); otherwise divides the logits
	TopK int     // keep the TopK most likely tokens; 0: all
	TopP float64 // keep the smallest set of most likely tokens whose probability reaches TopP; 0 or 1: all
	MinP float64 // drop tokens less likely than MinP times the most likely one; 0: none
	Seed uint64  // random stream of the sampler
}

// Check validates the parameters.
func (p Params) Check() error {
	switch {
	case math.IsNaN(p.Temp) || p.Temp < 0 || math.IsInf(p.Temp, 0):
		return fmt.Errorf("sample: temperature %v must be finite and >= 0", p.Temp)
	case p.TopK < 0:
		return fmt.Errorf("sample: top-k %d must be >= 0", p.TopK)
	case math.IsNaN(p.TopP) || p.TopP < 0 || p.TopP > 1:
		return fmt.Errorf("sample: top-p %v must be in [0, 1]", p.TopP)
	case math.IsNaN(p.MinP) || p.MinP < 0 || p.MinP > 1:
		return fmt.Errorf("sample: min-p %v must be in [0, 1]", p.MinP)
	}
	return nil
}

// Sampler draws tokens; it is not safe for concurrent use.
type Sampler struct {
	p    Params
	rng  *rand.Rand
	cand []cand
}

type cand struct {
	id    int32
	logit float64
	p     float64
}

// New returns a sampler for p.
func New(p Params) (*Sampler, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15))}, nil
}

// Params returns the sampler's parameters.
func (s *Sampler) Params() Params { return s.p }

// Sample returns the next token. Logits must be finite except -Inf (a
// masked token); an empty or all-masked vector is an error.
func (s *Sampler) Sample(logits []float32) (int32, error) {
	if len(logits) == 0 || len(logits) > math.MaxInt32 {
		return 0, fmt.Errorf("sample: %d logits", len(logits))
	}
	best := -1
	for i, l := range logits {
		if math.IsNaN(float64(l)) || math.IsInf(float64(l), 1) {
			return 0, fmt.Errorf("sample: logit %d is %v", i, l)
		}
		if !math.IsInf(float64(l), -1) && (best < 0 || l > logits[best]) {
			best = i
		}
	}
	if best < 0 {
		return 0, errors.New("sample: every token is masked")
	}
	if s.p.Temp == 0 {
		return int32(best), nil
	}
	// Candidates by decreasing probability, probabilities at temperature 1.
	c := s.cand[:0]
	top := float64(logits[best])
	sum := 0.0
	for i, l := range logits {
		if math.IsInf(float64(l), -1) {
			continue
		}
		p := math.Exp(float64(l) - top)
		sum += p
		c = append(c, cand{id: int32(i), logit: float64(l), p: p})
	}
	// min-p needs no order: drop the unlikely first, which keeps the sort short.
	if s.p.MinP > 0 {
		k := 0
		for _, x := range c {
			if x.p >= s.p.MinP { // the most likely token has p = 1 here
				c[k] = x
				k++
			}
		}
		// Truncations are relative to the full distribution: keep sum.
		c = c[:k]
	}
	sort.Slice(c, func(i, j int) bool {
		if c[i].logit != c[j].logit {
			return c[i].logit > c[j].logit
		}
		return c[i].id < c[j].id
	})
	if s.p.TopK > 0 && len(c) > s.p.TopK {
		c = c[:s.p.TopK]
	}
	if s.p.TopP > 0 && s.p.TopP < 1 {
		acc := 0.0
		for i, x := range c {
			acc += x.p / sum
			if acc >= s.p.TopP {
				c = c[:i+1]
				break
			}
		}
	}
	// Temperature over what is left.
	w := 0.0
	for i := range c {
		c[i].p = math.Exp((c[i].logit - top) / s.p.Temp)
		w += c[i].p
	}
	s.cand = c
	r := s.rng.Float64() * w
	for _, x := range c {
		r -= x.p
		if r < 0 {
			return x.id, nil
		}
	}
	return c[len(c)-1].id, nil
}

// LogProb is log softmax(logits)[id]: the model's log-probability of id at
// temperature 1, before any truncation.
func LogProb(logits []float32, id int32) float64 {
	top := math.Inf(-1)
	for _, l := range logits {
		top = math.Max(top, float64(l))
	}
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(float64(l) - top)
	}
	return float64(logits[id]) - top - math.Log(sum)
}

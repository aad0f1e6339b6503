package kvpool

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/deft-vk/deft/treeattn"
)

// BenchmarkFewShotStep decodes few-shot style (a 4000-token prompt, 50
// branches, one token per branch per step) on a host-only pool and reports,
// per page size, the host time of one step (50 appends and the step's tree)
// and the share of allocated slots holding no token, averaged over 400
// steps.
func BenchmarkFewShotStep(b *testing.B) {
	for _, pt := range []int{1, 4, 8, 16, 32, 64} {
		b.Run(fmt.Sprintf("page%d", pt), func(b *testing.B) {
			cfg := Config{Layers: 32, KVHeads: 8, HeadDim: 128, KV: treeattn.KVF16, PageTokens: pt}
			cfg.BudgetBytes = 30000 * cfg.TokenBytes()
			var waste float64
			var stepTime time.Duration
			steps := 0
			for b.Loop() {
				p, err := newHost(cfg)
				if err != nil {
					b.Fatal(err)
				}
				prompt := p.NewSequence()
				if _, err := p.Append(prompt, 4000); err != nil {
					b.Fatal(err)
				}
				branches := make([]*Node, 50)
				for i := range branches {
					branches[i], _ = p.Fork(prompt)
				}
				for range 400 {
					start := time.Now()
					for _, n := range branches {
						if _, err := p.Append(n, 1); err != nil {
							b.Fatal(err)
						}
					}
					if _, err := p.Tree(nil); err != nil {
						b.Fatal(err)
					}
					stepTime += time.Since(start)
					used := (p.numPages - len(p.free)) * pt
					waste += float64(used-p.tokens) / float64(used)
					steps++
				}
			}
			b.ReportMetric(float64(stepTime.Nanoseconds())/float64(steps), "ns/step")
			b.ReportMetric(100*waste/float64(steps), "%unused")
		})
	}
}

// BenchmarkReasoningStep grows and prunes a Tree-of-Thoughts-like tree
// (thoughts of 20-120 tokens, 3 children each, half of them pruned) and
// reports the share of allocated slots holding no token per page size.
func BenchmarkReasoningStep(b *testing.B) {
	for _, pt := range []int{1, 4, 8, 16, 32, 64} {
		b.Run(fmt.Sprintf("page%d", pt), func(b *testing.B) {
			cfg := Config{Layers: 32, KVHeads: 8, HeadDim: 128, KV: treeattn.KVF16, PageTokens: pt}
			cfg.BudgetBytes = 200000 * cfg.TokenBytes()
			var waste float64
			steps := 0
			for b.Loop() {
				rng := rand.New(rand.NewPCG(1, 2))
				p, err := newHost(cfg)
				if err != nil {
					b.Fatal(err)
				}
				q := p.NewSequence()
				if _, err := p.Append(q, 300); err != nil {
					b.Fatal(err)
				}
				frontier := []*Node{q}
				for depth := 0; depth < 6 && len(frontier) > 0; depth++ {
					var next []*Node
					for _, n := range frontier {
						for range 3 {
							c, _ := p.Fork(n)
							for range 20 + rng.IntN(100) { // token by token
								if _, err := p.Append(c, 1); err != nil {
									b.Fatal(err)
								}
								if rng.IntN(16) == 0 {
									if _, err := p.Tree(nil); err != nil {
										b.Fatal(err)
									}
								}
							}
							next = append(next, c)
						}
					}
					used := (p.numPages - len(p.free)) * pt
					waste += float64(used-p.tokens) / float64(used)
					steps++
					rng.Shuffle(len(next), func(i, j int) { next[i], next[j] = next[j], next[i] })
					for _, n := range next[len(next)/2:] {
						_ = p.Prune(n)
					}
					frontier = next[:min(len(next)/2, 8)]
					for _, n := range next[min(len(next)/2, 8) : len(next)/2] {
						_ = p.Prune(n)
					}
				}
			}
			b.ReportMetric(100*waste/float64(steps), "%unused")
		})
	}
}

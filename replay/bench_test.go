package replay

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// benchWorkloads returns constructors for the benchmarked workloads: few-shot
// b=50 and the sorting trace's largest tree (from the shared folder when
// present, else the largest testdata tree).
func benchWorkloads(b *testing.B) map[string]func() Workload {
	path := filepath.Join("..", "..", "shared", "workloads", "deft", "reasoning", "sorting128ToT.json")
	if _, err := os.Stat(path); err != nil {
		path = testdataPath("sorting128ToT_first3.json")
	}
	trees, err := ReadReasoningFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var largest *ReasoningTree
	for _, t := range Completed(trees) {
		if largest == nil || t.TotalTokens() > largest.TotalTokens() {
			largest = t
		}
	}
	return map[string]func() Workload{
		"fewshot-b50": func() Workload {
			w, err := NewFewShot(FewShotPrompt, 50, FewShotSteps)
			if err != nil {
				b.Fatal(err)
			}
			return w
		},
		"sorting-largest": func() Workload {
			w, err := NewReasoning(largest)
			if err != nil {
				b.Fatal(err)
			}
			return w
		},
	}
}

// BenchmarkReplay measures the host time per step of producing each step:
// the driver alone, the driver plus the reference Simulator, and both plus
// a full treeattn.Tree (with slots) from the simulator every step, which is
// the non-incremental baseline for a KV pool. It reports ns/step.
func BenchmarkReplay(b *testing.B) {
	for name, mk := range benchWorkloads(b) {
		for _, mode := range []string{"driver", "sim", "tree"} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				steps := 0
				var elapsed time.Duration
				for b.Loop() {
					w := mk()
					start := time.Now()
					switch mode {
					case "driver":
						for range Steps(w) {
							steps++
						}
					default:
						_, err := Run(w, func(st Step, sim *Simulator) error {
							steps++
							if mode == "tree" {
								_, err := sim.Tree()
								return err
							}
							return nil
						})
						if err != nil {
							b.Fatal(err)
						}
					}
					elapsed += time.Since(start)
				}
				b.ReportMetric(float64(elapsed.Nanoseconds())/float64(steps), "ns/step")
			})
		}
	}
}

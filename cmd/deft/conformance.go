package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/treeattn"
)

func conformanceCommand() *cli.Command {
	return &cli.Command{
		Name:  "conformance",
		Usage: "check every attention method against the float64 CPU reference on this GPU",
		Flags: []cli.Flag{deviceFlag, validationFlag, variantFlag, jsonFlag,
			&cli.BoolFlag{Name: "full", Usage: "large trees and every speculative tree (minutes on a CPU device)"},
			&cli.StringSliceFlag{Name: "method", Usage: "only these methods (repeatable)"},
			&cli.Uint64Flag{Name: "seed", Usage: "random seed", DefaultText: "from the clock"},
			// No -v alias: in `deft attention` -v is the values file.
			&cli.BoolFlag{Name: "verbose", Usage: "print every case"},
		},
		Action: func(c *cli.Context) (err error) {
			methods, err := parseMethods(c)
			if err != nil {
				return err
			}
			seed := c.Uint64("seed")
			if !c.IsSet("seed") {
				seed = uint64(time.Now().UnixNano())
			}
			rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
			cases, err := conformance.Suite(rng, conformance.SuiteOptions{Full: c.Bool("full"), Methods: methods})
			if err != nil {
				return err
			}
			d, closeDevice, err := openDevice(c)
			if err != nil {
				return err
			}
			defer closeDevice(&err)
			if variants := attnVariants(c, d, true); len(variants) > 0 {
				// Every case once per variant; the coopmat variant reads
				// fp16 KV only (fp32 cases would run the scalar one again).
				var all []conformance.Case
				for _, cs := range cases {
					for _, v := range variants {
						if treeattn.IsCoopMat(v) && cs.KV != treeattn.KVF16 {
							continue
						}
						cs.Variant = v
						all = append(all, cs)
					}
				}
				cases = all
			}
			results := make([]conformance.Result, 0, len(cases))
			failed := 0
			for i, cs := range cases {
				r := conformance.Run(d, rng, cs)
				results = append(results, r)
				if !r.Pass {
					failed++
				}
				if step := max(1, len(cases)/20); !c.Bool("verbose") && !c.Bool("json") && (i+1)%step == 0 {
					fmt.Fprintf(c.App.ErrWriter, "conformance: %d/%d cases, %d failed\n", i+1, len(cases), failed)
				}
				if c.Bool("verbose") || !r.Pass {
					status := "ok"
					if !r.Pass {
						status = "FAIL " + r.Error
					}
					fmt.Fprintf(c.App.ErrWriter, "[%d/%d] %s [%s, %s reduce] %s %s d=%d gqa=%d q=%d tokens=%d: rel L2 %.2g %s\n", i+1, len(cases),
						r.Method, r.Variant, r.Reduce, r.Case, r.KV, r.HeadDim, r.GQA, r.Queries, r.Tokens, r.RelL2, status)
				}
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					Device  string               `json:"device"`
					Driver  string               `json:"driver"`
					Seed    uint64               `json:"seed"`
					Failed  int                  `json:"failed"`
					Results []conformance.Result `json:"results"`
				}{d.Info.Name, d.Info.DriverName + " " + d.Info.DriverInfo, seed, failed, results}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(c.App.Writer, "device %s (%s), subgroup size %d, seed %d\n", d.Info.Name, d.Info.DriverInfo, d.Info.SubgroupSize, seed)
				printSummary(c, results)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d conformance cases failed (seed %d)", failed, len(results), seed)
			}
			if !c.Bool("json") { // JSON output stays one document
				fmt.Fprintf(c.App.Writer, "%d passed, 0 failed\n", len(results))
			}
			return nil
		},
	}
}

// printSummary prints one row per method, KV type, head dim and GQA ratio
// with the worst error over its trees.
func printSummary(c *cli.Context, results []conformance.Result) {
	type key struct {
		m        treeattn.Method
		variant  string
		kv       string
		dim, gqa int
	}
	type agg struct {
		n, pass int
		fused   int
		worst   float64
		tol     float64
	}
	groups := map[key]*agg{}
	var keys []key
	for _, r := range results {
		k := key{r.Method, r.Variant, r.KV, r.HeadDim, r.GQA}
		a := groups[k]
		if a == nil {
			a = &agg{tol: r.Tolerance}
			groups[k] = a
			keys = append(keys, k)
		}
		a.n++
		if r.Reduce == "fused" {
			a.fused++
		}
		if r.Pass {
			a.pass++
		}
		if r.RelL2 > a.worst || r.RelL2 != r.RelL2 {
			a.worst = r.RelL2
		}
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "method\tvariant\tkv\thead dim\tgqa\tcases\tfused reduce\tworst rel L2\ttolerance\tresult")
	for _, k := range keys {
		a := groups[k]
		status := "pass"
		if a.pass != a.n {
			status = fmt.Sprintf("FAIL (%d of %d)", a.n-a.pass, a.n)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.2e\t%.0e\t%s\n", k.m, k.variant, k.kv, k.dim, k.gqa, a.n, a.fused, a.worst, a.tol, status)
	}
	tw.Flush()
}

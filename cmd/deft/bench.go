package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/deft-vk/deft/bench"
	"github.com/deft-vk/deft/probe"
	"github.com/deft-vk/deft/treeattn"
)

func benchCommand() *cli.Command {
	var treeNames []string
	for _, s := range bench.Snapshots {
		treeNames = append(treeNames, s.Name)
	}
	return &cli.Command{
		Name:  "bench",
		Usage: "time attention methods on a decoding-tree snapshot (one layer, L2 flushed, median of runs)",
		Flags: []cli.Flag{deviceFlag, validationFlag,
			&cli.StringFlag{Name: "tree", Value: "fewshot-b20", Usage: fmt.Sprintf("a snapshot name %v or a tree JSON file", treeNames)},
			&cli.StringFlag{Name: "model", Value: "llama3-8b", Usage: "attention shape preset (llama3-8b, llama2-7b)"},
			&cli.StringFlag{Name: "kv", Value: "f16", Usage: "KV type: f16 or f32"},
			&cli.StringSliceFlag{Name: "method", Usage: "methods to time (default all)"},
			&cli.IntFlag{Name: "runs", Value: 20, Usage: "timed runs per method"},
			&cli.StringFlag{Name: "json", Usage: "also write results to this JSON file"},
			&cli.IntSliceFlag{Name: "tiles", Usage: "workgroup,tokens,rows tile sizes (default: chosen from the device)"},
			&cli.IntFlag{Name: "block", Usage: "block/chunk size in tokens (default: chosen per tree)"},
			&cli.IntFlag{Name: "passes", Usage: fmt.Sprintf("most shared-memory passes per workgroup (default and cap %d)", treeattn.MaxTilePasses)},
		},
		Action: func(c *cli.Context) (err error) {
			model, err := bench.FindModel(c.String("model"))
			if err != nil {
				return err
			}
			kv := treeattn.KVF16
			switch c.String("kv") {
			case "f16":
			case "f32":
				kv = treeattn.KVF32
			default:
				return fmt.Errorf("--kv %q: want f16 or f32", c.String("kv"))
			}
			tree, err := bench.FindSnapshot(c.String("tree"))
			if err != nil {
				raw, rerr := os.ReadFile(c.String("tree"))
				if rerr != nil {
					return fmt.Errorf("--tree %q is neither a snapshot %v nor a readable file", c.String("tree"), treeNames)
				}
				if tree, err = treeattn.ParseTreeJSON(raw); err != nil {
					return err
				}
			}
			methods := treeattn.Methods
			if names := c.StringSlice("method"); len(names) > 0 {
				methods = nil
				for _, n := range names {
					m, err := treeattn.ParseMethod(n)
					if err != nil {
						return err
					}
					methods = append(methods, m)
				}
			}
			d, done, err := openDevice(c)
			if err != nil {
				return err
			}
			defer func() {
				if cerr := done(); err == nil {
					err = cerr
				}
			}()
			var tiles treeattn.Tiles
			if t := c.IntSlice("tiles"); len(t) > 0 {
				if len(t) != 3 {
					return fmt.Errorf("--tiles takes workgroup,tokens,rows")
				}
				tiles = treeattn.Tiles{Workgroup: t[0], Tokens: t[1], Rows: t[2]}
			}
			seed := uint64(time.Now().UnixNano())
			rng := rand.New(rand.NewPCG(seed, seed))
			roof, _ := probe.Load(d.Info.UUID)
			var results []bench.Result
			for _, m := range methods {
				results = append(results, bench.Run(d, rng, tree, model.Shape, kv, m, bench.Options{Runs: c.Int("runs"), Check: true, Block: c.Int("block"), MaxPasses: c.Int("passes"), Tiles: tiles}))
			}
			w := c.App.Writer
			fmt.Fprintf(w, "device %s (%s %s); tree %s: %d queries, %d tokens; %s %s\n", d.Info.Name, d.Info.DriverName, d.Info.DriverInfo,
				c.String("tree"), len(tree.Queries), tree.TotalTokens(), model.Name, kv)
			if roof != nil {
				fmt.Fprintf(w, "roofline %.0f GB/s (deft probe, %s)\n", roof.BytesPerSec/1e9, roof.When.Format(time.DateOnly))
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "method\tlayer time\treduce\tp10..p90\tvs flashdecoding\tKV MB\tIO MB\tGB/s\troofline time\twgs\tplan\tcheck")
			var base time.Duration
			for _, r := range results {
				if r.Method == treeattn.MethodFlashDecoding && r.Error == "" {
					base = r.Median
				}
			}
			for _, r := range results {
				if r.Error != "" {
					fmt.Fprintf(tw, "%s\tFAILED: %s\n", r.Method, r.Error)
					continue
				}
				speed, roofT := "-", "-"
				if base > 0 {
					speed = fmt.Sprintf("%.2fx", float64(base)/float64(r.Median))
				}
				if roof != nil {
					roofT = fmt.Sprintf("%.1f us", float64(r.IO.KVUniqueBytes)/roof.BytesPerSec*1e6)
				}
				fmt.Fprintf(tw, "%s\t%.1f us\t%.1f us\t%.1f..%.1f\t%s\t%.1f\t%.1f\t%.0f\t%s\t%d\t%.1f ms\t%.1e\n", r.Method, us(r.Median), us(r.Reduce), us(r.P10), us(r.P90), speed,
					float64(r.IO.KVBytes)/1e6, float64(r.IO.Total())/1e6, float64(r.IO.Total())/r.Median.Seconds()/1e9, roofT, r.Workgroup,
					float64(r.PlanTime.Microseconds())/1000, r.RelL2)
			}
			tw.Flush()
			if p := c.String("json"); p != "" {
				b, _ := json.MarshalIndent(struct {
					Device  string         `json:"device"`
					Driver  string         `json:"driver"`
					Tree    string         `json:"tree"`
					Model   string         `json:"model"`
					KV      string         `json:"kv"`
					Results []bench.Result `json:"results"`
				}{d.Info.Name, d.Info.DriverName + " " + d.Info.DriverInfo, c.String("tree"), model.Name, kv.String(), results}, "", "  ")
				if err := os.WriteFile(p, b, 0o644); err != nil {
					return fmt.Errorf("write %s: %w", p, err)
				}
			}
			for _, r := range results {
				if r.Error != "" {
					return fmt.Errorf("method %s failed: %s", r.Method, r.Error)
				}
			}
			return nil
		},
	}
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

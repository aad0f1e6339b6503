package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/deft-vk/deft/bench"
	"github.com/deft-vk/deft/probe"
	"github.com/deft-vk/deft/treeattn"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "time attention methods on decoding-tree snapshots and multi-step workloads (L2 flushed, GPU timestamps, median of runs)",
		Description: "Each method is checked against the CPU reference on the first sampled step, then timed for one layer on every sampled step;\n" +
			"the time per step is layers x that layer's median. Without --tree or --workload it times the fewshot-b20 snapshot.",
		Flags: []cli.Flag{deviceFlag, validationFlag, variantFlag,
			&cli.StringSliceFlag{Name: "tree", Usage: fmt.Sprintf("single-step trees: a snapshot %v, 'all' of them, or a tree JSON file (repeatable)", bench.SnapshotNames())},
			&cli.StringSliceFlag{Name: "workload", Usage: fmt.Sprintf("multi-step workloads %v, or 'all' (repeatable)", bench.WorkloadNames())},
			&cli.IntFlag{Name: "sample", Value: 4, Usage: "decode steps timed per workload, evenly spaced with the first and last (0: every step)"},
			&cli.StringFlag{Name: "workloads", EnvVars: []string{"DEFT_WORKLOADS"}, Usage: "the shared workloads folder with deft/reasoning and deft/speculative",
				DefaultText: "../shared/workloads next to the working directory or the repository"},
			&cli.StringFlag{Name: "kv-layout", Value: string(bench.LayoutContiguous), Usage: "where workload K/V slots come from: contiguous (per node, creation order) or paged (replayed onto a kvpool: pages of 8 slots)"},
			&cli.IntFlag{Name: "trace-tree", Usage: "which complete tree of a reasoning trace the sorting and set workloads replay (0: the first)"},
			&cli.StringFlag{Name: "model", Value: "llama3-8b", Usage: "attention shape preset (llama3-8b, llama2-7b), overridden by the shape flags; 'custom', or --q-heads/--kv-heads/--head-dim without --model, takes the shape from the flags alone"},
			&cli.IntFlag{Name: "q-heads", Usage: "query heads (overrides the preset)", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "kv-heads", Usage: "KV heads (overrides the preset)", DefaultText: "the preset's"},
			&cli.IntFlag{Name: "head-dim", Usage: fmt.Sprintf("head dimension, a multiple of 4 up to %d (overrides the preset)", treeattn.MaxHeadDim), DefaultText: "the preset's"},
			&cli.IntFlag{Name: "layers", Usage: "layers per decoding step (overrides the preset)", DefaultText: "the preset's; 1 for a custom model"},
			&cli.StringFlag{Name: "kv", Value: "f16", Usage: "KV type: f16 or f32"},
			&cli.StringSliceFlag{Name: "method", Usage: "methods to time (repeatable)", DefaultText: "all"},
			&cli.IntFlag{Name: "runs", Value: 20, Usage: fmt.Sprintf("timed runs per step and method, median reported (at most %d)", bench.MaxRuns)},
			&cli.IntFlag{Name: "flush-mib", Value: bench.DefaultFlushBytes >> 20, Usage: "L2 flush buffer in MiB, written before each timed run (capped by the device's storage buffer range)"},
			&cli.DurationFlag{Name: "warm-up", Value: bench.DefaultWarmUp, Usage: "replay the recorded runs this long before timing them"},
			&cli.Uint64Flag{Name: "seed", Usage: "random seed of the inputs", DefaultText: "from the clock"},
			&cli.StringFlag{Name: "json", Usage: "also write the report (device, driver, versions, configuration, every result) to this JSON file"},
			&cli.StringFlag{Name: "plot", Usage: "draw time per step and IO per method to this .png or .svg file"},
			&cli.StringFlag{Name: "load", Usage: "print (and with --plot, draw) a report saved by --json instead of measuring; no device is opened"},
			// No -q alias: in `deft attention` -q is the queries file.
			&cli.BoolFlag{Name: "quiet", Usage: "no progress bar (on a terminal) or progress lines (otherwise)"},
			&cli.IntSliceFlag{Name: "tiles", Usage: "workgroup,tokens,rows tile sizes", DefaultText: "chosen from the device"},
			&cli.IntFlag{Name: "block", Usage: "block/chunk size in tokens", DefaultText: "chosen per tree"},
			&cli.StringFlag{Name: "reduce", Value: "auto", Usage: "where partial results are merged: auto, fused (by the scalar partial_attn wherever its bounds allow) or separate (the reduce_partials dispatch)"},
			&cli.IntFlag{Name: "passes", Usage: "most shared-memory passes per workgroup", DefaultText: fmt.Sprintf("%d, also the cap", treeattn.MaxTilePasses)},
		},
		Action:      benchAction,
		Subcommands: []*cli.Command{benchGenerateCommand()},
	}
}

func benchAction(c *cli.Context) (err error) {
	if p := c.String("plot"); p != "" {
		if l := strings.ToLower(p); !strings.HasSuffix(l, ".png") && !strings.HasSuffix(l, ".svg") {
			return fmt.Errorf("--plot %s: want a .png or .svg file", p)
		}
	}
	if p := c.String("load"); p != "" {
		report, err := bench.LoadReport(p)
		if err != nil {
			return err
		}
		if err := report.WriteTable(c.App.Writer); err != nil {
			return err
		}
		return saveReport(c, report)
	}
	preset := c.String("model")
	flags := bench.ModelFlags{QHeads: c.Int("q-heads"), KVHeads: c.Int("kv-heads"), HeadDim: c.Int("head-dim"), Layers: c.Int("layers")}
	if !c.IsSet("model") && (flags.QHeads != 0 || flags.KVHeads != 0 || flags.HeadDim != 0) {
		preset = "" // shape flags without --model describe a custom model
	}
	model, err := bench.ResolveModel(preset, flags)
	if err != nil {
		return err
	}
	kv, err := treeattn.ParseKVType(c.String("kv"))
	if err != nil {
		return fmt.Errorf("--kv: %w", err)
	}
	methods, err := parseMethods(c)
	if err != nil {
		return err
	}
	if len(methods) == 0 {
		methods = treeattn.Methods
	}
	var tiles treeattn.Tiles
	if t := c.IntSlice("tiles"); len(t) > 0 {
		if len(t) != 3 {
			return fmt.Errorf("--tiles takes workgroup,tokens,rows")
		}
		tiles = treeattn.Tiles{Workgroup: t[0], Tokens: t[1], Rows: t[2]}
	}
	reduce, err := treeattn.ParseReduce(c.String("reduce"))
	if err != nil {
		return fmt.Errorf("--reduce: %w", err)
	}
	if r := c.Int("runs"); r < 1 || r > bench.MaxRuns {
		return fmt.Errorf("--runs %d: want 1..%d", r, bench.MaxRuns)
	}
	if c.Int("sample") < 0 {
		return fmt.Errorf("--sample %d: want 0 (every step) or more", c.Int("sample"))
	}
	if c.Int("flush-mib") < 1 {
		return fmt.Errorf("--flush-mib %d: want at least 1", c.Int("flush-mib"))
	}
	src := bench.Source{Dir: c.String("workloads"), TraceTree: c.Int("trace-tree")}
	layout, err := bench.ParseLayout(c.String("kv-layout"))
	if err != nil {
		return fmt.Errorf("--kv-layout: %w", err)
	}

	// Build every tree and sample every workload before opening the device:
	// missing data fails fast.
	var work []*bench.Sampled
	trees, names := c.StringSlice("tree"), c.StringSlice("workload")
	if len(trees) == 0 && len(names) == 0 {
		trees = []string{"fewshot-b20"}
	}
	for _, name := range expand(trees, bench.SnapshotNames()) {
		s, err := snapshotOrFile(name, src)
		if err != nil {
			return err
		}
		work = append(work, s)
	}
	for _, name := range expand(names, bench.WorkloadNames()) {
		def, err := bench.FindWorkload(name)
		if err != nil {
			return err
		}
		s, err := bench.SampleWorkload(def, src, c.Int("sample"), layout)
		if err != nil {
			return err
		}
		work = append(work, s)
	}

	d, closeDevice, err := openDevice(c)
	if err != nil {
		return err
	}
	defer closeDevice(&err)
	seed := c.Uint64("seed")
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	roof, _ := probe.Load(d.Info.UUID)
	cfg := bench.Config{Model: model, KV: kv, Methods: methods, Variants: attnVariants(c, d, false),
		Options: bench.Options{Runs: c.Int("runs"), FlushBytes: uint64(c.Int("flush-mib")) << 20, WarmUp: c.Duration("warm-up"),
			Block: c.Int("block"), MaxPasses: c.Int("passes"), Tiles: tiles, Reduce: reduce}}
	if cfg.WarmUp == 0 {
		cfg.WarmUp = -1 // --warm-up 0: none
	}
	if roof != nil {
		cfg.Roofline, cfg.FMAPeak = roof.BytesPerSec, roof.FMAFlopsPerSec
	}
	report := bench.NewReport(d.Info, bench.RunConfig{Model: model, KV: kv.String(), Methods: methods, Runs: cfg.Runs, Sample: c.Int("sample"),
		FlushBytes: min(cfg.FlushBytes, uint64(d.Info.MaxStorageBufferRange)&^3), WarmUp: max(cfg.WarmUp, 0), Block: cfg.Block, MaxPasses: cfg.MaxPasses, Tiles: tiles, Reduce: cfg.Reduce,
		Seed: seed, Workloads: src.Dir, TraceTree: src.TraceTree, KVLayout: layout, Validation: c.Bool("validation")}, roof)

	total := 0
	for _, s := range work {
		total += len(s.Steps) * len(methods)
	}
	bar := newProgress(c.App.ErrWriter, total, c.Bool("quiet"))
	done := 0
	cfg.Progress = func(p bench.Progress) {
		done++
		switch {
		case bar != nil:
			bar.Add(1)
		case !c.Bool("quiet"):
			// No terminal for a bar (stderr redirected): a line per
			// finished method, so a long run is not silent for minutes.
			fmt.Fprintln(c.App.ErrWriter, progressLine(p, done, total))
		}
	}
	w := c.App.Writer
	report.WriteHeader(w)
	for _, s := range work {
		if bar != nil {
			bar.Describe(s.Name)
		}
		res, err := bench.Measure(d, rng, s, cfg)
		if err != nil {
			if bar != nil {
				bar.Clear()
			}
			return err
		}
		report.Workloads = append(report.Workloads, res)
		if bar != nil {
			bar.Clear()
		}
		if err := report.WriteWorkload(w, res); err != nil {
			return err
		}
	}
	if bar != nil {
		bar.Finish()
	}
	if err := saveReport(c, report); err != nil {
		return err
	}
	if f := report.Failed(); len(f) > 0 {
		return fmt.Errorf("failed (not timed): %s", strings.Join(f, ", "))
	}
	return nil
}

// saveReport writes --json and --plot.
func saveReport(c *cli.Context, report *bench.Report) error {
	if p := c.String("json"); p != "" {
		if err := report.SaveJSON(p); err != nil {
			return err
		}
	}
	if p := c.String("plot"); p != "" {
		if err := report.SavePlot(p); err != nil {
			return err
		}
	}
	return nil
}

// expand replaces "all" by every name.
func expand(list, all []string) []string {
	var out []string
	for _, n := range list {
		if n == "all" {
			out = append(out, all...)
		} else {
			out = append(out, n)
		}
	}
	return out
}

// snapshotOrFile returns a snapshot by name, or a tree JSON file as a
// single step.
func snapshotOrFile(name string, src bench.Source) (*bench.Sampled, error) {
	for _, s := range bench.Snapshots {
		if s.Name == name {
			t, err := s.Build(src)
			if err != nil {
				return nil, err
			}
			return bench.SingleStep(s.Name, s.Description, t), nil
		}
	}
	raw, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("--tree %q is neither a snapshot %v nor a readable file", name, bench.SnapshotNames())
	}
	t, err := treeattn.ParseTreeJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("--tree %s: %w", name, err)
	}
	return bench.SingleStep(name, "tree file", t), nil
}

// progressLine describes one finished (step, method) of a benchmark.
func progressLine(p bench.Progress, done, total int) string {
	what := "failed: " + p.Error
	if p.Result != nil {
		what = fmt.Sprintf("%v per layer", p.Result.Layer)
	}
	return fmt.Sprintf("bench: [%d/%d] %s step %d/%d %s: %s", done, total, p.Workload, p.Step, p.Steps, p.Method, what)
}

// newProgress returns a progress bar on w, or nil when quiet or when w is
// not a terminal.
func newProgress(w io.Writer, total int, quiet bool) *progressbar.ProgressBar {
	f, ok := w.(*os.File)
	if quiet || !ok || !term.IsTerminal(int(f.Fd())) || total == 0 {
		return nil
	}
	return progressbar.NewOptions(total, progressbar.OptionSetWriter(f), progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true), progressbar.OptionSetElapsedTime(true), progressbar.OptionClearOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionSetWidth(30))
}

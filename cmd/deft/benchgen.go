package main

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/deft-vk/deft/bench"
	"github.com/deft-vk/deft/genbench"
	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/modelgen"
	"github.com/deft-vk/deft/probe"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// benchGenerateCommand is `deft bench generate`, a subcommand of bench
// (urfave/cli runs bench's own action when no subcommand name follows).
func benchGenerateCommand() *cli.Command {
	return &cli.Command{
		Name:  "generate",
		Usage: "time whole decoding steps of a model (every layer and the logits) in tree-decoding scenarios, attention by each method",
		Description: "Scenarios: single (one sequence at context 4000), fewshot (4000-token prompt, 50 branches of 400), spec64 and spec256\n" +
			"(DeFT's token trees over 1000 tokens), beams (8 beams at context 2000), prefill (a 4000-token prompt, tokens/s).\n" +
			"The K/V of each scenario's tree are random fp16 values written into a kvpool (no real prefill); the step's own tokens\n" +
			"run through model.Forward. The model is first checked on a 1-block slice against the float64 CPU reference.",
		Flags: []cli.Flag{deviceFlag, validationFlag, variantFlag,
			&cli.StringFlag{Name: "shape", Usage: fmt.Sprintf("model shape %v with random weights generated on the device", modelgen.ShapeNames()), DefaultText: "llama3-8b"},
			&cli.StringFlag{Name: "type", Usage: fmt.Sprintf("weight type of --shape %v", modelgen.TypeNames()), DefaultText: "f16"},
			&cli.StringFlag{Name: "model", Usage: "a GGUF Llama model file to measure instead of --shape/--type"},
			&cli.StringSliceFlag{Name: "scenario", Usage: fmt.Sprintf("scenarios %v, or 'all' (repeatable or comma-separated)", genbench.ScenarioNames()), DefaultText: "all"},
			&cli.StringSliceFlag{Name: "method", Usage: "attention methods (repeatable or comma-separated)", DefaultText: "flatten,flashdecoding"},
			&cli.IntFlag{Name: "runs", Value: 10, Usage: "timed runs per scenario and method, median reported"},
			&cli.IntFlag{Name: "attn-runs", Usage: "further runs with timestamps around attention, for its share", DefaultText: "min(runs, 5)"},
			&cli.IntFlag{Name: "profile", Usage: "further runs with a timestamp after every kind of work in every layer: where the step's time goes (0: none)"},
			&cli.DurationFlag{Name: "warm-up", Value: bench.DefaultWarmUp, Usage: "run each step this long before timing it (GPUs run slower for a while after idling)"},
			&cli.StringFlag{Name: "kv", Value: "f16", Usage: "KV cache type: f16 or f32"},
			&cli.Float64Flag{Name: "scale", Value: 1, Usage: "multiply every context, prompt and branch length by this (branch, beam and draft counts stay): quick runs on slow devices"},
			&cli.Float64Flag{Name: "bandwidth", Usage: "device bandwidth in GB/s for the weight-read floor", DefaultText: "the saved `deft probe`, else measured now"},
			&cli.StringFlag{Name: "workloads", EnvVars: []string{"DEFT_WORKLOADS"}, Usage: "the shared workloads folder with deft/speculative/APPS_tree_size{64,256}.json",
				DefaultText: "../shared/workloads next to the working directory or the repository; a generated 4-ary tree when absent"},
			&cli.Uint64Flag{Name: "seed", Usage: "random seed (weights of the check slice, K/V, tokens)", DefaultText: "from the clock"},
			&cli.StringFlag{Name: "json", Usage: "also write the report to this JSON file"},
			&cli.StringFlag{Name: "plot", Usage: "draw ms per step of every scenario and method to this .png or .svg file"},
			&cli.StringFlag{Name: "load", Usage: "print (and with --plot, draw) a report saved by --json instead of measuring"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress bar (on a terminal) or progress lines (otherwise)"},
			&cli.IntFlag{Name: "chunk", Usage: "most tokens per submission (prefill runs in chunks of this many)", DefaultText: fmt.Sprintf("%d, less on devices of little memory", model.DefaultChunkTokens)},
			&cli.StringFlag{Name: "gemm-inputs", Usage: "activations that batch gemms read: f16 (converted once per step) or f32 (converted in every gemm tile)", DefaultText: "f16 with the cooperative-matrix gemm, else f32"},
			&cli.IntFlag{Name: "prefetch-mib", Usage: "decoding steps read up to this many MiB of the weights after attention (output projection, then gate/up) beside each layer's attention, into the L2 cache (an experiment; 0: off)"},
		},
		Action: benchGenerateAction,
	}
}

func benchGenerateAction(c *cli.Context) (err error) {
	w, ew := c.App.Writer, c.App.ErrWriter
	if c.Args().Len() > 0 {
		return fmt.Errorf("bench generate: unexpected arguments %q", c.Args().Slice())
	}
	if p := c.String("plot"); p != "" {
		if l := strings.ToLower(p); !strings.HasSuffix(l, ".png") && !strings.HasSuffix(l, ".svg") {
			return fmt.Errorf("--plot %s: want a .png or .svg file", p)
		}
	}
	if p := c.String("load"); p != "" {
		r, err := genbench.LoadReport(p)
		if err != nil {
			return err
		}
		if err := r.WriteTable(c.App.Writer); err != nil {
			return err
		}
		return saveGenReport(c, r)
	}
	scenarios, err := parseScenarios(c.StringSlice("scenario"))
	if err != nil {
		return err
	}
	var methods []treeattn.Method
	for _, s := range splitList(c.StringSlice("method")) {
		m, err := treeattn.ParseMethod(s)
		if err != nil {
			return fmt.Errorf("--method: %w", err)
		}
		methods = append(methods, m)
	}
	if len(methods) == 0 {
		methods = []treeattn.Method{treeattn.MethodFlatten, treeattn.MethodFlashDecoding}
	}
	kv, err := treeattn.ParseKVType(c.String("kv"))
	if err != nil {
		return fmt.Errorf("--kv: %w", err)
	}
	scale := c.Float64("scale")
	if !(scale > 0 && scale <= 1) {
		return fmt.Errorf("--scale %v: want 0 < scale <= 1", scale)
	}
	if r := c.Int("runs"); r < 1 || r > 1000 {
		return fmt.Errorf("--runs %d: want 1..1000", r)
	}
	if r := c.Int("attn-runs"); r < 0 || r > 1000 {
		return fmt.Errorf("--attn-runs %d: want 1..1000", r)
	}
	if r := c.Int("profile"); r < 0 || r > 1000 {
		return fmt.Errorf("--profile %d: want 0..1000", r)
	}
	if bw := c.Float64("bandwidth"); bw < 0 {
		return fmt.Errorf("--bandwidth %v: want GB/s > 0", bw)
	}
	if ch := c.Int("chunk"); ch < 0 || ch > treeattn.MaxShapeValue {
		return fmt.Errorf("--chunk %d: want 1..%d tokens", ch, treeattn.MaxShapeValue)
	}
	if gi := c.String("gemm-inputs"); gi != model.GemmInputsAuto && gi != model.GemmInputsF16 && gi != model.GemmInputsF32 {
		return fmt.Errorf("--gemm-inputs %q: want f16 or f32", gi)
	}
	if p := c.Int("prefetch-mib"); p < 0 || p > 4096 {
		return fmt.Errorf("--prefetch-mib %d: want 0..4096", p)
	}
	seed := c.Uint64("seed")
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t, err := resolveTarget(c, seed)
	if err != nil {
		return err
	}
	if t.file != nil {
		defer t.file.Close()
	}
	specs, err := loadSpecTrees(c.String("workloads"))
	if err != nil {
		return err
	}

	d, closeDevice, err := openDevice(c)
	if err != nil {
		return err
	}
	defer closeDevice(&err)
	report := genbench.NewReport(d.Info)
	report.Model, report.Config, report.KV, report.Seed, report.Scale = t.name, t.cfg, kv.String(), seed, scale
	for _, name := range []string{"variant", "chunk", "gemm-inputs", "prefetch-mib"} {
		if c.IsSet(name) {
			if report.Flags == nil {
				report.Flags = map[string]string{}
			}
			report.Flags[name] = fmt.Sprint(c.Value(name))
		}
	}
	// The bandwidth first, on an idle device with free memory, as `deft
	// probe` measures it.
	if err := setBandwidth(c, d, report); err != nil {
		return err
	}

	// Check before anything is timed.
	if !c.Bool("quiet") {
		fmt.Fprintf(ew, "bench generate: checking a 1-block slice of %s against the float64 CPU reference\n", t.name)
	}
	slice, err := genbench.BuildSlice(t.cfg, t.typeOf, t.file, seed)
	if err != nil {
		return err
	}
	report.Check, err = genbench.CheckSlice(d, slice, methods, kv, seed)
	slice.Close()
	if err != nil {
		return err
	}

	mopts := model.Options{KV: kv, Method: methods[0], ChunkTokens: c.Int("chunk"), GemmInputs: c.String("gemm-inputs"),
		PrefetchBytes: uint64(c.Int("prefetch-mib")) << 20}
	var m *model.Model
	if t.file != nil {
		m, err = model.Load(d, t.file, mopts)
	} else {
		m, err = model.LoadRandom(d, model.RandomSpec{Config: t.cfg, TensorType: t.typeOf, Seed: seed}, mopts)
	}
	if err != nil {
		return err
	}
	defer m.Close()
	report.WeightBytes, report.StepWeightBytes = m.WeightBytes(), m.StepWeightBytes()
	report.Floor = genbench.Floor(report.StepWeightBytes, report.Bandwidth)
	opts := genbench.Options{Methods: methods, Runs: c.Int("runs"), AttnRuns: c.Int("attn-runs"), ProfileRuns: c.Int("profile"), WarmUp: c.Duration("warm-up"),
		Sizes: genbench.DefaultSizes.Scaled(scale), Specs: specs, Seed: seed}
	if opts.WarmUp == 0 {
		opts.WarmUp = -1
	}
	report.Runs, report.Sizes, report.WarmUp = opts.Runs, opts.Sizes, max(opts.WarmUp, 0)
	report.AttnRuns = opts.AttnRuns
	if report.AttnRuns == 0 {
		report.AttnRuns = min(opts.Runs, 5)
	}
	report.WriteHeader(w)

	total, done := len(scenarios)*len(methods), 0
	bar := newProgress(ew, total, c.Bool("quiet"))
	opts.Progress = func(s string, meth treeattn.Method, r *genbench.MethodResult) {
		done++
		switch {
		case bar != nil:
			bar.Add(1)
		case !c.Bool("quiet"):
			fmt.Fprintf(ew, "bench generate: [%d/%d] %s %s: %.3f ms per step\n", done, total, s, meth, float64(r.StepTime())/1e6)
		}
	}
	// One scenario at a time, so each table appears as soon as it is done.
	for _, s := range scenarios {
		if bar != nil {
			bar.Describe(s)
		}
		res, err := genbench.Run(m, []string{s}, report.Floor, opts)
		if bar != nil {
			bar.Clear()
		}
		if err != nil {
			return err
		}
		report.Scenarios = append(report.Scenarios, res...)
		if err := report.WriteScenario(w, res[0]); err != nil {
			return err
		}
	}
	if bar != nil {
		bar.Finish()
	}
	report.WriteTargets(w)
	return saveGenReport(c, report)
}

// genTarget is the model to measure: a file (--model) or a shape and
// weight type with random weights.
type genTarget struct {
	name   string
	cfg    llama.Config
	typeOf func(string) gguf.TensorType // nil for a file: the slice copies its tensors
	file   *gguf.File
}

func resolveTarget(c *cli.Context, seed uint64) (*genTarget, error) {
	if path := c.String("model"); path != "" {
		if c.IsSet("shape") || c.IsSet("type") {
			return nil, fmt.Errorf("--model %s: give either a file or --shape/--type, not both", path)
		}
		f, err := gguf.Open(path)
		if err != nil {
			return nil, err
		}
		cfg, err := llama.ConfigFrom(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return &genTarget{name: filepath.Base(path), cfg: cfg, file: f}, nil
	}
	shape, typ := "llama3-8b", "f16"
	if c.IsSet("shape") {
		shape = c.String("shape")
	}
	if c.IsSet("type") {
		typ = c.String("type")
	}
	cfg, err := modelgen.ShapeConfig(shape)
	if err != nil {
		return nil, fmt.Errorf("--shape: %w", err)
	}
	typeOf, err := modelgen.TensorTypes(typ, cfg)
	if err != nil {
		return nil, fmt.Errorf("--type: %w", err)
	}
	return &genTarget{name: fmt.Sprintf("%s %s (random weights, seed %d)", shape, typ, seed), cfg: cfg, typeOf: typeOf}, nil
}

// setBandwidth fills the report's bandwidth: --bandwidth, the saved probe,
// or a probe measured now (not saved). A probe measured now runs twice and
// keeps the faster: on the H200 one cold run inside this command once read
// 1633 GB/s where `deft probe` reads 4153, which would have put the floor
// 2.5x too high and passed the targets.
func setBandwidth(c *cli.Context, d *vk.Device, r *genbench.Report) error {
	switch roof, _ := probe.Load(d.Info.UUID); {
	case c.IsSet("bandwidth"):
		r.Bandwidth, r.BandwidthSource = c.Float64("bandwidth")*1e9, "--bandwidth"
	case roof != nil:
		r.Bandwidth, r.Probe = roof.BytesPerSec, roof
		r.BandwidthSource = "deft probe of " + roof.When.Format(time.DateOnly)
	default:
		var res *probe.Result
		for range 2 {
			run, err := probe.Run(d, probe.Options{})
			if err != nil {
				return fmt.Errorf("no saved `deft probe` for this device, and measuring it failed: %w", err)
			}
			if res == nil || run.BytesPerSec > res.BytesPerSec {
				res = run
			}
		}
		r.Bandwidth, r.Probe = res.BytesPerSec, res
		r.BandwidthSource = "no saved `deft probe`: measured now, the faster of two runs as `deft probe` does (not saved; run `deft probe` to keep one)"
	}
	return nil
}

// saveGenReport writes --json and --plot.
func saveGenReport(c *cli.Context, r *genbench.Report) error {
	if p := c.String("json"); p != "" {
		if err := r.SaveJSON(p); err != nil {
			return err
		}
	}
	if p := c.String("plot"); p != "" {
		if err := r.SavePlot(p); err != nil {
			return err
		}
	}
	return nil
}

// splitList splits comma-separated entries of a repeatable flag.
func splitList(xs []string) []string {
	var out []string
	for _, x := range xs {
		for _, s := range strings.Split(x, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// parseScenarios expands 'all' and checks the names.
func parseScenarios(xs []string) ([]string, error) {
	names := splitList(xs)
	if len(names) == 0 {
		names = []string{"all"}
	}
	var out []string
	for _, n := range expand(names, genbench.ScenarioNames()) {
		ok := false
		for _, k := range genbench.ScenarioNames() {
			ok = ok || k == n
		}
		if !ok {
			return nil, fmt.Errorf("--scenario %q: want one of %v or all", n, genbench.ScenarioNames())
		}
		out = append(out, n)
	}
	return out, nil
}

// loadSpecTrees reads DeFT's 64- and 256-candidate token trees from the
// workloads folder (as `deft bench` finds it); a missing file leaves the
// generated tree, which the report names. A file that exists but does not
// parse is an error.
func loadSpecTrees(dir string) (genbench.SpecTrees, error) {
	specs := genbench.SpecTrees{}
	src := bench.Source{Dir: dir}
	for name, n := range map[string]int{genbench.Spec64: 64, genbench.Spec256: 256} {
		t, err := src.SpecTree(n)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "not found") {
				continue
			}
			return nil, err
		}
		specs[name] = t
	}
	return specs, nil
}

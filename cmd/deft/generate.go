package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/deft-vk/deft/generate"
	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/model/assets"
	"github.com/deft-vk/deft/replay"
	"github.com/deft-vk/deft/sample"
	"github.com/deft-vk/deft/tokenizer"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// generateJSON is `deft generate --json`'s output.
type generateJSON struct {
	Model        string           `json:"model"`
	Device       string           `json:"device"`
	PromptTokens []int32          `json:"prompt_tokens"`
	Tokens       []generatedToken `json:"tokens"`
	Text         string           `json:"text"`
	Stop         string           `json:"stop"`
	PrefillMS    float64          `json:"prefill_ms"`
	DecodeMS     float64          `json:"decode_ms"`
	TokensPerSec float64          `json:"decode_tokens_per_second"`
}

type generatedToken struct {
	generate.Token
	MS float64 `json:"ms"` // the forward pass that gave its logits (the prompt's for the first), and sampling
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// openModelFile opens --model, or the embedded stories260K.gguf.
func openModelFile(path string) (*gguf.File, error) {
	if path == "" {
		return gguf.FromBytes(assets.Stories260KName, assets.Stories260K)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("--model: %w", err)
	}
	return gguf.Open(path)
}

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:  "generate",
		Usage: "generate text with a GGUF Llama model: plain decoding, parallel branches, beam search or speculative decoding",
		Description: "Without --model, the embedded stories260K.gguf (llama2.c's tinyllamas, MIT) is used.\n" +
			"Plain decoding echoes the prompt and streams the continuation to stdout. The tree modes decode\n" +
			"a tree over the one prompt, sharing its KV pages, with one forward pass per step:\n" +
			"  --branches B  B sampled continuations; branch i samples with seed --seed+i, so\n" +
			"                'deft generate --seed S+i' alone gives branch i's tokens. Prints the prompt,\n" +
			"                then each branch as it ends, every line of it labelled '[branch i] '.\n" +
			"  --beams K     beam search: each beam's score is its summed log-probability (the EOS that ends\n" +
			"                it included) / its length^alpha with alpha = 1; the K best extensions survive\n" +
			"                each step, a beam that picks EOS is finished and the width shrinks by one, so\n" +
			"                it ends with K beams. Deterministic (no sampling flags). Prints the prompt and\n" +
			"                the best beam; the scores of all go to stderr (and all beams to --json).\n" +
			"  --draft D     speculative decoding: each step drafts a token tree after the last token\n" +
			"                ('lookup': what followed earlier occurrences of the context's last 3-, 2- or\n" +
			"                1-gram; or the top candidates of a draft model M.gguf with the same vocabulary),\n" +
			"                shaped by --tree-width W x --tree-depth D (W first-level candidates, each\n" +
			"                followed by a chain of best candidates: W*D tokens) or --tree-json (rank c of\n" +
			"                path [a, b, c] = c-th best candidate), and the target verifies the whole tree\n" +
			"                in one pass. Every token is the target's own sample, drawn in plain decoding's\n" +
			"                order, so the output is plain decoding's (at --temp 0, greedy) for the seed.\n" +
			"                Streams like plain mode; acceptance figures go to stderr (and --json).\n" +
			"--json prints token ids, log-probabilities and per-step timing instead.",
		Flags: []cli.Flag{deviceFlag, validationFlag, variantFlag,
			&cli.StringFlag{Name: "model", Usage: "GGUF file of a Llama model (default: the embedded stories260K)"},
			&cli.StringFlag{Name: "prompt", Usage: "prompt text"},
			&cli.StringFlag{Name: "prompt-file", Usage: "read the prompt from a file"},
			&cli.IntFlag{Name: "n", Value: 256, Usage: "tokens to generate at most (per branch or beam)"},
			&cli.Float64Flag{Name: "temp", Value: 0.8, Usage: "temperature; 0 is greedy"},
			&cli.IntFlag{Name: "top-k", Value: 40, Usage: "sample among the K most likely tokens; 0: all"},
			&cli.Float64Flag{Name: "top-p", Value: 0.95, Usage: "sample among the most likely tokens whose probability reaches P; 1: all"},
			&cli.Float64Flag{Name: "min-p", Value: 0.05, Usage: "drop tokens less likely than P times the most likely; 0: none"},
			&cli.Uint64Flag{Name: "seed", Usage: "random seed; branch i uses seed+i", DefaultText: "from the clock"},
			&cli.IntFlag{Name: "max-kv-tokens", Usage: "KV cache size in tokens; tree modes accept less and end a branch or beam that does not fit", DefaultText: "what the mode needs"},
			&cli.StringFlag{Name: "kv", Value: "f32", Usage: "KV cache type: f32 or f16"},
			&cli.IntFlag{Name: "branches", Usage: "decode B sampled continuations of the prompt as a tree"},
			&cli.IntFlag{Name: "beams", Usage: "beam search with K beams, scored by summed log-probability / length (alpha = 1)"},
			&cli.StringFlag{Name: "draft", Usage: "speculative decoding with token trees drafted by 'lookup' (prompt lookup) or a draft model M.gguf"},
			&cli.IntFlag{Name: "tree-width", Value: 4, Usage: "--draft: candidates at the tree's first level"},
			&cli.IntFlag{Name: "tree-depth", Value: 4, Usage: "--draft: depth of the drafted tree (a chain of best candidates below each first-level one)"},
			&cli.StringFlag{Name: "tree-json", Usage: "--draft: the tree's shape from a DeFT/Medusa token-tree file (e.g. APPS_tree_size32.json) instead of width x depth"},
			jsonFlag,
		},
		Action: runGenerate,
	}
}

// maxTreeWidth bounds --branches (and --beams): one forward pass holds
// every branch's query.
const maxTreeWidth = 1024

// generation is what every mode of deft generate sets up.
type generation struct {
	c      *cli.Context
	f      *gguf.File
	cfg    llama.Config
	tok    *tokenizer.Tokenizer
	prompt []int32
	n      int
	sp     sample.Params
	kv     treeattn.KVType
}

func runGenerate(c *cli.Context) (err error) {
	g := &generation{c: c, n: c.Int("n")}
	mode, err := generateMode(c)
	if err != nil {
		return err
	}
	if c.IsSet("prompt") && c.IsSet("prompt-file") {
		return errors.New("give --prompt or --prompt-file, not both")
	}
	text := c.String("prompt")
	if p := c.String("prompt-file"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("--prompt-file: %w", err)
		}
		text = string(b)
	}
	if g.n < 1 {
		return fmt.Errorf("--n %d: generate at least one token", g.n)
	}
	switch c.String("kv") {
	case "f32":
		g.kv = treeattn.KVF32
	case "f16":
		g.kv = treeattn.KVF16
	default:
		return fmt.Errorf("--kv %q: want f32 or f16", c.String("kv"))
	}
	seed := c.Uint64("seed")
	if !c.IsSet("seed") {
		seed = uint64(time.Now().UnixNano())
	}
	g.sp = sample.Params{Temp: c.Float64("temp"), TopK: c.Int("top-k"), TopP: c.Float64("top-p"), MinP: c.Float64("min-p"), Seed: seed}
	if err := g.sp.Check(); err != nil {
		return err
	}
	if g.f, err = openModelFile(c.String("model")); err != nil {
		return err
	}
	defer g.f.Close()
	if g.cfg, err = llama.ConfigFrom(g.f); err != nil {
		return err
	}
	if g.tok, err = model.TokenizerFrom(g.f); err != nil {
		return err
	}
	if g.prompt, err = generate.Prompt(g.tok, g.cfg, text); err != nil {
		return err
	}
	switch mode {
	case "branches":
		return g.branches()
	case "beams":
		return g.beams()
	case "speculative":
		return g.speculative()
	}
	return g.plain()
}

// generateMode returns the decoding mode the flags ask for and checks the
// flags that belong to a mode.
func generateMode(c *cli.Context) (string, error) {
	var modes []string
	for _, f := range []string{"branches", "beams", "draft"} {
		if c.IsSet(f) {
			modes = append(modes, "--"+f)
		}
	}
	if len(modes) > 1 {
		return "", fmt.Errorf("%s are separate modes: give one", strings.Join(modes, " and "))
	}
	if !c.IsSet("draft") {
		for _, f := range []string{"tree-width", "tree-depth", "tree-json"} {
			if c.IsSet(f) {
				return "", fmt.Errorf("--%s shapes the drafted trees of --draft, which is not given", f)
			}
		}
	}
	if c.IsSet("branches") {
		if b := c.Int("branches"); b < 1 || b > maxTreeWidth {
			return "", fmt.Errorf("--branches %d: want 1 to %d", b, maxTreeWidth)
		}
		return "branches", nil
	}
	if c.IsSet("beams") {
		if k := c.Int("beams"); k < 1 || k > maxTreeWidth {
			return "", fmt.Errorf("--beams %d: want 1 to %d", k, maxTreeWidth)
		}
		for _, f := range []string{"temp", "top-k", "top-p", "min-p", "seed"} {
			if c.IsSet(f) {
				return "", fmt.Errorf("--beams is deterministic: it takes no --%s", f)
			}
		}
		return "beams", nil
	}
	if c.IsSet("draft") {
		if c.String("draft") == "" {
			return "", errors.New("--draft: want 'lookup' or a draft model's GGUF file")
		}
		if c.IsSet("tree-json") && (c.IsSet("tree-width") || c.IsSet("tree-depth")) {
			return "", errors.New("--tree-json gives the tree's shape: it takes no --tree-width or --tree-depth")
		}
		return "speculative", nil
	}
	return "plain", nil
}

// kvTokens returns --max-kv-tokens, or need when it is not set. A value
// below least is an error; below need it is allowed only for the tree
// modes (allowSmaller), whose branches end with a "pool-full" stop.
func (g *generation) kvTokens(need, least int, allowSmaller bool) (int, error) {
	c := g.c
	if !c.IsSet("max-kv-tokens") {
		return need, nil
	}
	n := c.Int("max-kv-tokens")
	if n < need && (!allowSmaller || n < least) {
		if allowSmaller {
			need = least
		}
		return 0, fmt.Errorf("--max-kv-tokens %d is too small: the prompt (%d tokens) and --n %d need %d", n, len(g.prompt), g.n, need)
	}
	return n, nil
}

// open opens the device and loads the model; done closes both.
// open opens the device, loads the model and makes a KV pool of kvTokens
// tokens; done, deferred with the mode's named error, releases them in
// reverse order.
func (g *generation) open(kvTokens int) (m *model.Model, d *vk.Device, pool *kvpool.Pool, done func(*error), err error) {
	d, closeDevice, err := openDevice(g.c)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	// A progress bar (on a terminal) for files that take a while to upload.
	bar := newByteProgress(g.c.App.ErrWriter, "loading "+filepath.Base(g.f.Name()), g.f.Size() < 256<<20)
	m, err = model.Load(d, g.f, model.Options{KV: g.kv, Progress: bar.update})
	bar.finish()
	if err != nil {
		closeDevice(&err)
		return nil, nil, nil, nil, err
	}
	if pool, err = model.NewPool(m, kvTokens); err != nil {
		m.Close()
		closeDevice(&err)
		return nil, nil, nil, nil, err
	}
	return m, d, pool, func(errp *error) { pool.Close(); m.Close(); closeDevice(errp) }, nil
}

// textOut is where a mode streams text: stdout, or nowhere with --json.
func (g *generation) textOut() io.Writer {
	if g.c.Bool("json") {
		return nil
	}
	return g.c.App.Writer
}

func (g *generation) plain() (err error) {
	c := g.c
	need := generate.Budget(g.cfg, len(g.prompt), g.n)
	kvTokens, err := g.kvTokens(need, need, false)
	if err != nil {
		return err
	}
	m, d, pool, done, err := g.open(kvTokens)
	if err != nil {
		return err
	}
	defer done(&err)

	out := g.textOut()
	res, err := generate.Plain(m, g.tok, pool, g.prompt, generate.Options{MaxTokens: g.n, Sample: g.sp}, out)
	if err != nil {
		return err
	}
	if !c.Bool("json") {
		fmt.Fprintln(c.App.Writer)
		return nil
	}
	j := generateJSON{Model: g.f.Name(), Device: d.Info.Name, PromptTokens: g.prompt, Stop: res.Stop, PrefillMS: ms(res.Prefill)}
	j.Tokens, j.Text, j.DecodeMS, j.TokensPerSec = g.tokensJSON(res.Tokens)
	return writeJSON(c, j)
}

// tokensJSON returns tokens as JSON entries, their text, and the decoding
// time and rate after the first token (whose time is the prompt's).
func (g *generation) tokensJSON(tokens []generate.Token) (out []generatedToken, text string, decodeMS, perSec float64) {
	out = []generatedToken{}
	ids := make([]int32, 0, len(tokens))
	var decode time.Duration
	for i, t := range tokens {
		out = append(out, generatedToken{Token: t, MS: ms(t.Elapsed)})
		ids = append(ids, t.ID)
		if i > 0 {
			decode += t.Elapsed
		}
	}
	if decode > 0 {
		perSec = float64(len(tokens)-1) / decode.Seconds()
	}
	return out, g.tok.Decode(ids), ms(decode), perSec
}

func writeJSON(c *cli.Context, v any) error {
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// stepJSON is one forward pass of a tree mode.
type stepJSON struct {
	generate.StepStat
	MS float64 `json:"ms"`
}

func stepsJSON(steps []generate.StepStat) []stepJSON {
	out := make([]stepJSON, len(steps))
	for i, s := range steps {
		out[i] = stepJSON{StepStat: s, MS: ms(s.Elapsed)}
	}
	return out
}

// branchesJSON is `deft generate --branches B --json`'s output.
type branchesJSON struct {
	Model        string       `json:"model"`
	Device       string       `json:"device"`
	Mode         string       `json:"mode"`
	PromptTokens []int32      `json:"prompt_tokens"`
	Branches     []branchJSON `json:"branches"`
	PrefillMS    float64      `json:"prefill_ms"`
	Steps        []stepJSON   `json:"steps"`
	DecodeMS     float64      `json:"decode_ms"`
	TokensPerSec float64      `json:"decode_tokens_per_second"` // tokens of every branch after the first, over the steps' time
}

type branchJSON struct {
	Index  int              `json:"index"`
	Seed   uint64           `json:"seed"`
	Tokens []generatedToken `json:"tokens"`
	Text   string           `json:"text"`
	Stop   string           `json:"stop"`
	Error  string           `json:"error,omitempty"`
}

func (g *generation) branches() (err error) {
	c := g.c
	nb := c.Int("branches")
	pt := kvpool.DefaultPageTokens
	need := generate.BranchesBudget(g.cfg, len(g.prompt), nb, g.n, pt)
	kvTokens, err := g.kvTokens(need, len(g.prompt)+nb, true)
	if err != nil {
		return err
	}
	m, d, pool, done, err := g.open(kvTokens)
	if err != nil {
		return err
	}
	defer done(&err)
	out := g.textOut()
	res, err := generate.Branches(m, g.tok, pool, g.prompt, generate.BranchOptions{Branches: nb, MaxTokens: g.n, Sample: g.sp}, out)
	if err != nil {
		return err
	}
	for _, b := range res.Branches {
		if b.Err != "" {
			fmt.Fprintf(c.App.ErrWriter, "branch %d ended after %d tokens: %s\n", b.Index, len(b.Tokens), b.Err)
		}
	}
	if !c.Bool("json") {
		return nil
	}
	j := branchesJSON{Model: g.f.Name(), Device: d.Info.Name, Mode: "branches", PromptTokens: g.prompt,
		PrefillMS: ms(res.Prefill), Steps: stepsJSON(res.Steps)}
	tokens := 0
	for _, b := range res.Branches {
		bj := branchJSON{Index: b.Index, Seed: b.Seed, Stop: b.Stop, Error: b.Err}
		bj.Tokens, bj.Text, _, _ = g.tokensJSON(b.Tokens)
		j.Branches = append(j.Branches, bj)
		tokens += max(len(b.Tokens)-1, 0)
	}
	var decode time.Duration
	for _, s := range res.Steps {
		decode += s.Elapsed
	}
	j.DecodeMS = ms(decode)
	if decode > 0 {
		j.TokensPerSec = float64(tokens) / decode.Seconds()
	}
	return writeJSON(c, j)
}

// beamsJSON is `deft generate --beams K --json`'s output.
type beamsJSON struct {
	Model        string     `json:"model"`
	Device       string     `json:"device"`
	Mode         string     `json:"mode"`
	LengthAlpha  float64    `json:"length_alpha"`
	PromptTokens []int32    `json:"prompt_tokens"`
	Beams        []beamJSON `json:"beams"` // best first
	PrefillMS    float64    `json:"prefill_ms"`
	Steps        []stepJSON `json:"steps"`
	DecodeMS     float64    `json:"decode_ms"`
}

type beamJSON struct {
	generate.Beam
	Tokens []generatedToken `json:"tokens"`
	Text   string           `json:"text"`
}

func (g *generation) beams() (err error) {
	c := g.c
	k := c.Int("beams")
	need := generate.BeamsBudget(g.cfg, len(g.prompt), k, g.n, kvpool.DefaultPageTokens)
	kvTokens, err := g.kvTokens(need, len(g.prompt)+k, true)
	if err != nil {
		return err
	}
	m, d, pool, done, err := g.open(kvTokens)
	if err != nil {
		return err
	}
	defer done(&err)
	out := g.textOut()
	res, err := generate.Beams(m, g.tok, pool, g.prompt, generate.BeamOptions{Beams: k, MaxTokens: g.n}, out)
	if err != nil {
		return err
	}
	for i, b := range res.Beams {
		fmt.Fprintf(c.App.ErrWriter, "beam %d: score %.4f (log-prob %.4f over %d tokens), %s", i, b.Score, b.SumLogProb, b.Length, b.Stop)
		if b.Err != "" {
			fmt.Fprintf(c.App.ErrWriter, ": %s", b.Err)
		}
		fmt.Fprintln(c.App.ErrWriter)
	}
	if !c.Bool("json") {
		return nil
	}
	j := beamsJSON{Model: g.f.Name(), Device: d.Info.Name, Mode: "beams", LengthAlpha: generate.LengthAlpha, PromptTokens: g.prompt,
		Beams: []beamJSON{}, PrefillMS: ms(res.Prefill), Steps: stepsJSON(res.Steps)}
	for _, b := range res.Beams {
		bj := beamJSON{Beam: b}
		bj.Tokens, bj.Text, _, _ = g.tokensJSON(b.Tokens)
		j.Beams = append(j.Beams, bj)
	}
	var decode time.Duration
	for _, s := range res.Steps {
		decode += s.Elapsed
	}
	j.DecodeMS = ms(decode)
	return writeJSON(c, j)
}

// treeShape returns the drafted trees' shape from --tree-json or
// --tree-width and --tree-depth.
func treeShape(c *cli.Context) (generate.TreeShape, string, error) {
	if p := c.String("tree-json"); p != "" {
		raw, err := os.ReadFile(p)
		if err != nil {
			return generate.TreeShape{}, "", fmt.Errorf("--tree-json: %w", err)
		}
		st, err := replay.ParseSpeculativeJSON(raw)
		if err != nil {
			return generate.TreeShape{}, "", fmt.Errorf("--tree-json %s: %w", p, err)
		}
		s, err := generate.ShapeFromSpecTree(st)
		if err != nil {
			return generate.TreeShape{}, "", fmt.Errorf("--tree-json %s: %w", p, err)
		}
		return s, filepath.Base(p), nil
	}
	w, d := c.Int("tree-width"), c.Int("tree-depth")
	s, err := generate.WidthDepthShape(w, d)
	if err != nil {
		return generate.TreeShape{}, "", fmt.Errorf("--tree-width %d --tree-depth %d: %w", w, d, err)
	}
	return s, fmt.Sprintf("%dx%d", w, d), nil
}

// specJSON is `deft generate --draft D --json`'s output.
type specJSON struct {
	Model            string           `json:"model"`
	Device           string           `json:"device"`
	Mode             string           `json:"mode"`
	Draft            string           `json:"draft"`
	Tree             string           `json:"tree"`        // WxD or the --tree-json file
	TreeTokens       int              `json:"tree_tokens"` // drafted tokens per step at most
	TreeDepth        int              `json:"tree_depth"`
	PromptTokens     []int32          `json:"prompt_tokens"`
	Tokens           []generatedToken `json:"tokens"` // ms: the step's time split among its tokens
	Text             string           `json:"text"`
	Stop             string           `json:"stop"`
	Error            string           `json:"error,omitempty"`
	PrefillMS        float64          `json:"prefill_ms"`
	Steps            []specStepJSON   `json:"steps"`
	MeanAcceptLength float64          `json:"mean_accept_length"` // accepted draft tokens per step
	TokensPerStep    float64          `json:"tokens_per_step"`    // tokens per target pass after the prompt's
	AcceptanceRate   float64          `json:"acceptance_rate"`    // accepted / drafted tokens
	DecodeMS         float64          `json:"decode_ms"`
	TokensPerSec     float64          `json:"decode_tokens_per_second"`
}

type specStepJSON struct {
	generate.SpecStep
	DraftMS  float64 `json:"draft_ms"`
	VerifyMS float64 `json:"verify_ms"`
}

func (g *generation) speculative() (err error) {
	c := g.c
	shape, shapeName, err := treeShape(c)
	if err != nil {
		return err
	}
	pt := kvpool.DefaultPageTokens
	need := generate.SpecBudget(g.cfg, len(g.prompt), g.n, shape, pt)
	kvTokens, err := g.kvTokens(need, len(g.prompt)+1, true)
	if err != nil {
		return err
	}
	draftName := c.String("draft")
	var draftFile *gguf.File
	if draftName != "lookup" {
		if draftFile, err = openModelFile(draftName); err != nil {
			return fmt.Errorf("--draft: %w", err)
		}
		defer draftFile.Close()
		if err := sameVocab(g.f, draftFile); err != nil {
			return err
		}
	}
	m, d, pool, done, err := g.open(kvTokens)
	if err != nil {
		return err
	}
	defer done(&err)
	var drafter generate.Drafter = &generate.LookupDrafter{}
	if draftFile != nil {
		dm, err := model.Load(d, draftFile, model.Options{KV: g.kv})
		if err != nil {
			return fmt.Errorf("--draft: %w", err)
		}
		defer dm.Close()
		dpool, err := model.NewPool(dm, generate.ModelDrafterBudget(generate.Budget(g.cfg, len(g.prompt), g.n), shape, pt))
		if err != nil {
			return fmt.Errorf("--draft: %w", err)
		}
		defer dpool.Close()
		md := generate.NewModelDrafter(dm, dpool)
		defer md.Close()
		drafter = md
	}
	out := g.textOut()
	res, err := generate.Speculative(m, g.tok, pool, g.prompt, generate.SpecOptions{MaxTokens: g.n, Sample: g.sp, Drafter: drafter, Shape: shape}, out)
	if err != nil {
		return err
	}
	if !c.Bool("json") {
		fmt.Fprintln(c.App.Writer)
	}
	ew := c.App.ErrWriter
	if res.Err != "" {
		fmt.Fprintf(ew, "stopped after %d tokens: %s\n", len(res.Tokens), res.Err)
	}
	drafted := 0.0
	if len(res.Steps) > 0 {
		for _, s := range res.Steps {
			drafted += float64(s.Drafted)
		}
		drafted /= float64(len(res.Steps))
	}
	fmt.Fprintf(ew, "speculative (%s, tree %s of %d tokens): %d tokens in %d steps after the prompt: accept length %.2f (%.1f%% of %.1f drafted), %.2f tokens per step\n",
		draftName, shapeName, len(shape.Parents), len(res.Tokens), len(res.Steps), res.MeanAccepted(), 100*res.AcceptanceRate(), drafted, res.TokensPerStep())
	if !c.Bool("json") {
		return nil
	}
	j := specJSON{Model: g.f.Name(), Device: d.Info.Name, Mode: "speculative", Draft: draftName, Tree: shapeName,
		TreeTokens: len(shape.Parents), TreeDepth: shape.Depth(), PromptTokens: g.prompt, Stop: res.Stop, Error: res.Err,
		PrefillMS: ms(res.Prefill), Steps: []specStepJSON{},
		MeanAcceptLength: res.MeanAccepted(), TokensPerStep: res.TokensPerStep(), AcceptanceRate: res.AcceptanceRate()}
	j.Tokens, j.Text, j.DecodeMS, j.TokensPerSec = g.tokensJSON(res.Tokens)
	for _, s := range res.Steps {
		j.Steps = append(j.Steps, specStepJSON{SpecStep: s, DraftMS: ms(s.Draft), VerifyMS: ms(s.Verify)})
	}
	return writeJSON(c, j)
}

// sameVocab checks that a draft model's tokens are the target's: drafted
// ids are fed to the target as they are.
func sameVocab(target, draft *gguf.File) error {
	tv, err := model.VocabFrom(target)
	if err != nil {
		return err
	}
	dv, err := model.VocabFrom(draft)
	if err != nil {
		return fmt.Errorf("--draft: %w", err)
	}
	if !slices.Equal(tv.Tokens, dv.Tokens) {
		return fmt.Errorf("--draft %s: its vocabulary (%d tokens) is not the target's (%d tokens); a draft model must share the target's tokenizer",
			draft.Name(), len(dv.Tokens), len(tv.Tokens))
	}
	return nil
}

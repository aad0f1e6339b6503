package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/deft-vk/deft/generate"
	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/model/assets"
	"github.com/deft-vk/deft/sample"
	"github.com/deft-vk/deft/treeattn"
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
		Usage: "generate text with a GGUF Llama model (plain decoding of one sequence)",
		Description: "Without --model, the embedded stories260K.gguf (llama2.c's tinyllamas, MIT) is used.\n" +
			"The prompt is echoed and the generated text streamed to stdout; --json prints token ids,\n" +
			"log-probabilities and per-step timing instead.",
		Flags: []cli.Flag{deviceFlag, validationFlag, variantFlag,
			&cli.StringFlag{Name: "model", Usage: "GGUF file of a Llama model (default: the embedded stories260K)"},
			&cli.StringFlag{Name: "prompt", Usage: "prompt text"},
			&cli.StringFlag{Name: "prompt-file", Usage: "read the prompt from a file"},
			&cli.IntFlag{Name: "n", Value: 256, Usage: "tokens to generate at most"},
			&cli.Float64Flag{Name: "temp", Value: 0.8, Usage: "temperature; 0 is greedy"},
			&cli.IntFlag{Name: "top-k", Value: 40, Usage: "sample among the K most likely tokens; 0: all"},
			&cli.Float64Flag{Name: "top-p", Value: 0.95, Usage: "sample among the most likely tokens whose probability reaches P; 1: all"},
			&cli.Float64Flag{Name: "min-p", Value: 0.05, Usage: "drop tokens less likely than P times the most likely; 0: none"},
			&cli.Uint64Flag{Name: "seed", Usage: "random seed", DefaultText: "from the clock"},
			&cli.IntFlag{Name: "max-kv-tokens", Usage: "KV cache size in tokens", DefaultText: "prompt + n, at most the model's context"},
			&cli.StringFlag{Name: "kv", Value: "f32", Usage: "KV cache type: f32 or f16"},
			jsonFlag,
		},
		Action: runGenerate,
	}
}

func runGenerate(c *cli.Context) (err error) {
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
	if c.Int("n") < 1 {
		return fmt.Errorf("--n %d: generate at least one token", c.Int("n"))
	}
	var kv treeattn.KVType
	switch c.String("kv") {
	case "f32":
		kv = treeattn.KVF32
	case "f16":
		kv = treeattn.KVF16
	default:
		return fmt.Errorf("--kv %q: want f32 or f16", c.String("kv"))
	}
	seed := c.Uint64("seed")
	if !c.IsSet("seed") {
		seed = uint64(time.Now().UnixNano())
	}
	sp := sample.Params{Temp: c.Float64("temp"), TopK: c.Int("top-k"), TopP: c.Float64("top-p"), MinP: c.Float64("min-p"), Seed: seed}
	if err := sp.Check(); err != nil {
		return err
	}
	f, err := openModelFile(c.String("model"))
	if err != nil {
		return err
	}
	defer f.Close()
	cfg, err := llama.ConfigFrom(f)
	if err != nil {
		return err
	}
	tok, err := model.TokenizerFrom(f)
	if err != nil {
		return err
	}
	prompt, err := generate.Prompt(tok, cfg, text)
	if err != nil {
		return err
	}
	need := generate.Budget(cfg, len(prompt), c.Int("n"))
	kvTokens := need
	if c.IsSet("max-kv-tokens") {
		kvTokens = c.Int("max-kv-tokens")
		if kvTokens < need {
			return fmt.Errorf("--max-kv-tokens %d is too small: the prompt (%d tokens) and --n %d need %d", kvTokens, len(prompt), c.Int("n"), need)
		}
	}

	d, closeDevice, err := openDevice(c)
	if err != nil {
		return err
	}
	defer closeDevice(&err)
	m, err := model.Load(d, f, model.Options{KV: kv})
	if err != nil {
		return err
	}
	defer m.Close()
	pool, err := model.NewPool(m, kvTokens)
	if err != nil {
		return err
	}
	defer pool.Close()

	out := c.App.Writer
	if c.Bool("json") {
		out = nil
	}
	res, err := generate.Plain(m, tok, pool, prompt, generate.Options{MaxTokens: c.Int("n"), Sample: sp}, out)
	if err != nil {
		return err
	}
	if !c.Bool("json") {
		fmt.Fprintln(c.App.Writer)
		return nil
	}
	j := generateJSON{Model: f.Name(), Device: d.Info.Name, PromptTokens: prompt, Tokens: []generatedToken{}, Stop: res.Stop,
		PrefillMS: ms(res.Prefill)}
	ids := make([]int32, 0, len(res.Tokens))
	var decode time.Duration
	for i, t := range res.Tokens {
		j.Tokens = append(j.Tokens, generatedToken{Token: t, MS: ms(t.Elapsed)})
		ids = append(ids, t.ID)
		if i > 0 {
			decode += t.Elapsed
		}
	}
	j.Text = tok.Decode(ids)
	j.DecodeMS = ms(decode)
	if decode > 0 {
		j.TokensPerSec = float64(len(res.Tokens)-1) / decode.Seconds()
	}
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	return enc.Encode(j)
}

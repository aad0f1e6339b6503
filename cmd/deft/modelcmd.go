package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/modelgen"
)

func modelCommand() *cli.Command {
	return &cli.Command{
		Name:  "model",
		Usage: "make model files",
		Subcommands: []*cli.Command{{
			Name:  "random",
			Usage: "write a GGUF Llama model of a real shape with random weights",
			Description: "The weights are drawn directly in their encoding (scaled so activations stay in range) from a hash of\n" +
				"(--seed, tensor name, position), so 'deft bench generate' and model.LoadRandom make the same bytes on the\n" +
				"GPU. --type q4_k_m follows llama.cpp's Q4_K_M recipe (Q4_K, with Q6_K for the logits matrix and for attn_v\n" +
				"and ffn_down in the layers llama.cpp favours); q5_k_m its Q5_K_M recipe (the same with Q5_K). The vocabulary is --vocab's (tokenizer.ggml.* copied), or a\n" +
				"synthetic SentencePiece one of the shape's size. The file is written tensor by tensor on all CPU cores.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "shape", Required: true, Usage: "model shape: " + strings.Join(modelgen.ShapeNames(), ", ")},
				&cli.StringFlag{Name: "type", Value: "f16", Usage: "weight type: " + strings.Join(modelgen.TypeNames(), ", ")},
				&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "generator seed"},
				&cli.StringFlag{Name: "out", Required: true, Usage: "output file (.gguf)"},
				&cli.StringFlag{Name: "vocab", Usage: "a GGUF file whose vocabulary to copy (its size replaces the shape's)"},
				&cli.BoolFlag{Name: "quiet", Usage: "no progress bar"},
			},
			Action: modelRandom,
		}},
	}
}

func modelRandom(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("model random: unexpected arguments %q", c.Args().Slice())
	}
	shape, typeName := c.String("shape"), c.String("type")
	cfg, err := modelgen.ShapeConfig(shape)
	if err != nil {
		return err
	}
	var voc modelgen.Vocabulary
	if path := c.String("vocab"); path != "" {
		f, err := gguf.Open(path)
		if err != nil {
			return fmt.Errorf("--vocab: %w", err)
		}
		voc, err = modelgen.VocabFrom(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("--vocab: %w", err)
		}
	} else if voc, err = modelgen.SyntheticVocab(cfg.Vocab); err != nil {
		return err
	}
	cfg = voc.Apply(cfg)
	types, err := modelgen.TensorTypes(typeName, cfg)
	if err != nil {
		return err
	}
	out := c.String("out")
	m := modelgen.Model{Name: fmt.Sprintf("random %s %s seed %d", shape, typeName, c.Uint64("seed")), Config: cfg,
		TensorType: types, Seed: c.Uint64("seed"), Vocab: voc, FileType: modelgen.FileTypes[typeName]}
	bar := newByteProgress(c.App.ErrWriter, "writing "+filepath.Base(out), c.Bool("quiet"))
	start := time.Now()
	n, err := modelgen.WriteFile(out, m, bar.update)
	bar.finish()
	if err != nil {
		return err
	}
	secs, gb := time.Since(start).Seconds(), float64(n)/1e9
	fmt.Fprintf(c.App.Writer, "%s: %s %s, seed %d, %d tokens of vocabulary, %.3f GB in %.1f s (%.2f s/GB)\n",
		out, shape, typeName, m.Seed, cfg.Vocab, gb, secs, secs/gb)
	return nil
}

// byteProgress is a progress bar over bytes on a terminal, nothing elsewhere.
type byteProgress struct{ bar *progressbar.ProgressBar }

func newByteProgress(w io.Writer, what string, quiet bool) *byteProgress {
	f, ok := w.(*os.File)
	if quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return &byteProgress{}
	}
	return &byteProgress{bar: progressbar.NewOptions64(-1, progressbar.OptionSetWriter(f), progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true), progressbar.OptionSetPredictTime(true), progressbar.OptionSetElapsedTime(true),
		progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionSetWidth(30))}
}

// update is a progress callback (done and total bytes); safe to call from
// one goroutine at a time.
func (p *byteProgress) update(done, total uint64) {
	if p == nil || p.bar == nil {
		return
	}
	if p.bar.GetMax64() != int64(total) {
		p.bar.ChangeMax64(int64(total))
	}
	_ = p.bar.Set64(int64(done))
}

func (p *byteProgress) finish() {
	if p != nil && p.bar != nil {
		_ = p.bar.Finish()
	}
}

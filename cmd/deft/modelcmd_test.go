package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/modelgen"
)

// `deft model random` writes the tiny shape in every type, and `deft
// generate` runs it end to end (greedy, a few tokens). q4_k_m needs the
// kernels' Q4_K and Q6_K: until they read them, generate must refuse it
// with a clear error.
func TestModelRandomGenerate(t *testing.T) {
	setupCLITest(t)
	dir := t.TempDir()
	for _, typ := range modelgen.TypeNames() {
		t.Run(typ, func(t *testing.T) {
			out := filepath.Join(dir, "tiny-"+typ+".gguf")
			stdout, stderr, err := runDeft(t, "model", "random", "--shape", "tiny", "--type", typ, "--seed", "9", "--out", out)
			require.NoError(t, err, stderr)
			require.Contains(t, stdout, "tiny "+typ)
			f, err := gguf.Open(out)
			require.NoError(t, err)
			cfg, err := llama.ConfigFrom(f)
			f.Close()
			require.NoError(t, err)
			require.Equal(t, modelgen.TinySyntheticVocab, cfg.Vocab)

			stdout, stderr, err = runDeft(t, "generate", "--validation", "--model", out, "--prompt", "hello world", "--temp", "0", "--n", "5", "--json")
			require.NoError(t, err, stderr)
			var res generateJSON
			require.NoError(t, json.Unmarshal([]byte(stdout), &res), stdout)
			require.NotEmpty(t, res.Tokens)
			for _, tk := range res.Tokens {
				require.Less(t, tk.LogProb, 0.0)
			}
		})
	}
}

// A real vocabulary is copied; bad flags fail clearly.
func TestModelRandomVocabAndErrors(t *testing.T) {
	setupCLITest(t)
	out := filepath.Join(t.TempDir(), "tiny.gguf")
	_, stderr, err := runDeft(t, "model", "random", "--shape", "tiny", "--type", "q8_0", "--out", out,
		"--vocab", testmodels.Path(t, "llama-2-tiny-random.gguf"))
	require.NoError(t, err, stderr)
	stdout, stderr, err := runDeft(t, "generate", "--validation", "--model", out, "--prompt", "Hello world", "--temp", "0", "--n", "3", "--json")
	require.NoError(t, err, stderr)
	var res generateJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &res), stdout)
	require.Equal(t, []int32{1, 15043, 3186}, res.PromptTokens)

	for _, args := range [][]string{
		{"--shape", "llama9", "--out", out},
		{"--shape", "tiny", "--type", "q2_k", "--out", out},
		{"--shape", "tiny", "--out", filepath.Join(t.TempDir(), "no", "such", "dir.gguf")},
		{"--shape", "tiny", "--out", out, "--vocab", "/nonexistent.gguf"},
	} {
		_, _, err := runDeft(t, append([]string{"model", "random"}, args...)...)
		require.Error(t, err, strings.Join(args, " "))
	}
}

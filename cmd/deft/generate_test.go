package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/testmodels"
)

// Greedy generation with the embedded model prints the start of the golden
// story (the prompt is BOS alone, echoed as nothing).
func TestGenerateGolden(t *testing.T) {
	setupCLITest(t)
	golden, err := os.ReadFile(testmodels.Path(t, "golden/stories260K-bos-greedy.txt"))
	require.NoError(t, err)
	stdout, stderr, err := runDeft(t, "generate", "--validation", "--temp", "0", "--n", "30")
	require.NoError(t, err, stderr)
	text := strings.TrimSuffix(stdout, "\n")
	require.True(t, strings.HasPrefix(string(golden), text), "output %q is not the start of the golden story", text)
	require.Greater(t, len(text), 80, "30 tokens of the story: %q", text)
	require.True(t, strings.HasPrefix(text, " Once upon a time, there was a little girl named Lily."), text)
}

// --json: token ids (the golden greedy ids), log-probabilities and timing.
func TestGenerateJSON(t *testing.T) {
	setupCLITest(t)
	stdout, stderr, err := runDeft(t, "generate", "--validation", "--temp", "0", "--n", "6", "--json")
	require.NoError(t, err, stderr)
	var out generateJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &out), stdout)
	require.Equal(t, []int32{1}, out.PromptTokens)
	require.Equal(t, "length", out.Stop)
	require.Len(t, out.Tokens, 6)
	// The golden top-5 file lists the greedy inputs: BOS, then each argmax.
	steps := readGoldenInputs(t)
	for i, tk := range out.Tokens {
		require.Equal(t, steps[i+1], tk.ID, "token %d", i)
		require.Less(t, tk.LogProb, 0.0)
		require.Greater(t, tk.LogProb, -5.0)
		require.Positive(t, tk.MS)
	}
	require.True(t, strings.HasPrefix(out.Text, "Once upon a time"), out.Text)
	require.Positive(t, out.PrefillMS)
	require.Positive(t, out.TokensPerSec)
}

// readGoldenInputs returns the `in` token of each line of the stories260K
// golden top-5 file.
func readGoldenInputs(t *testing.T) []int32 {
	raw, err := os.ReadFile(testmodels.Path(t, "golden/stories260K-bos-top5.txt"))
	require.NoError(t, err)
	var ids []int32
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var pos, in int32
		_, err := fmt.Sscanf(line, "pos %d in %d", &pos, &in)
		require.NoError(t, err, line)
		ids = append(ids, in)
	}
	return ids
}

// Sampling with a seed repeats; a prompt is echoed before its continuation.
func TestGenerateSampling(t *testing.T) {
	setupCLITest(t)
	args := []string{"generate", "--validation", "--prompt", "Tom had a red ball.", "--n", "12", "--temp", "1", "--top-k", "20", "--top-p", "0.9", "--min-p", "0.02", "--seed", "42"}
	a, stderr, err := runDeft(t, args...)
	require.NoError(t, err, stderr)
	b, _, err := runDeft(t, args...)
	require.NoError(t, err)
	require.Equal(t, a, b)
	require.True(t, strings.HasPrefix(a, " Tom had a red ball."), a)
	require.Greater(t, len(a), len(" Tom had a red ball.")+5, a)
}

// Bad input is a clear error, never a panic.
func TestGenerateBadInput(t *testing.T) {
	setupCLITest(t)
	dir := t.TempDir()
	// A GGUF file of another architecture.
	w := gguf.NewWriter()
	require.NoError(t, w.SetKV("general.architecture", "gpt2"))
	require.NoError(t, w.AddTensor("token_embd.weight", gguf.F32, []uint64{4, 2}, make([]byte, 32)))
	gpt2 := filepath.Join(dir, "gpt2.gguf")
	require.NoError(t, w.WriteFile(gpt2))
	notGGUF := filepath.Join(dir, "junk.gguf")
	require.NoError(t, os.WriteFile(notGGUF, []byte("not a gguf file at all"), 0o644))
	long := filepath.Join(dir, "long.txt")
	require.NoError(t, os.WriteFile(long, []byte(strings.Repeat("Once upon a time there was a cat. ", 400)), 0o644))

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing model", []string{"--model", filepath.Join(dir, "none.gguf")}, "no such file"},
		{"not gguf", []string{"--model", notGGUF}, "gguf"},
		{"other architecture", []string{"--model", gpt2}, `architecture "gpt2"`},
		{"prompt too long", []string{"--prompt-file", long}, "context is 2048 tokens"},
		{"missing prompt file", []string{"--prompt-file", filepath.Join(dir, "none.txt")}, "--prompt-file"},
		{"two prompts", []string{"--prompt", "a", "--prompt-file", long}, "not both"},
		{"pool too small", []string{"--prompt", "Once upon a time", "--max-kv-tokens", "8", "--n", "10"}, "--max-kv-tokens 8 is too small"},
		{"bad n", []string{"--n", "0"}, "--n 0"},
		{"bad temperature", []string{"--temp", "-1"}, "temperature"},
		{"bad top-p", []string{"--top-p", "2"}, "top-p"},
		{"bad kv", []string{"--kv", "f8"}, "--kv"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runDeft(t, append([]string{"generate", "--validation"}, tc.args...)...)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

// --model with the F16 llama-2-tiny-random: the prompt "Hello world"
// encodes to the golden file's forced ids and greedy decoding follows its
// inputs.
func TestGenerateLlama2Tiny(t *testing.T) {
	setupCLITest(t)
	stdout, stderr, err := runDeft(t, "generate", "--validation", "--model", testmodels.Path(t, "llama-2-tiny-random.gguf"),
		"--prompt", "Hello world", "--temp", "0", "--n", "8", "--json")
	require.NoError(t, err, stderr)
	var out generateJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &out), stdout)
	raw, err := os.ReadFile(testmodels.Path(t, "golden/llama-2-tiny-random-top5.txt"))
	require.NoError(t, err)
	var ins []int32
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var pos, in int32
		_, err := fmt.Sscanf(line, "pos %d in %d", &pos, &in)
		require.NoError(t, err, line)
		ins = append(ins, in)
	}
	require.Equal(t, ins[:3], out.PromptTokens)
	require.Len(t, out.Tokens, 8)
	for i, tk := range out.Tokens {
		require.Equal(t, ins[3+i], tk.ID, "token %d", i)
	}
}

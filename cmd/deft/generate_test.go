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

// --branches: the prompt, then one labelled line per branch; branch i is
// the plain run with --seed S+i; --json lists every branch with its seed.
func TestGenerateBranches(t *testing.T) {
	setupCLITest(t)
	args := []string{"generate", "--validation", "--prompt", "Tom had a red ball.", "--n", "10", "--temp", "1", "--seed", "40"}
	stdout, stderr, err := runDeft(t, append(args, "--branches", "3")...)
	require.NoError(t, err, stderr)
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	require.Len(t, lines, 4, stdout)
	require.Equal(t, " Tom had a red ball.", lines[0])
	plain, _, err := runDeft(t, "generate", "--validation", "--prompt", "Tom had a red ball.", "--n", "10", "--temp", "1", "--seed", "41")
	require.NoError(t, err)
	require.Contains(t, lines[1:], "[branch 1] "+strings.TrimPrefix(strings.TrimSuffix(plain, "\n"), " Tom had a red ball."))

	stdout, stderr, err = runDeft(t, append(args, "--branches", "3", "--json")...)
	require.NoError(t, err, stderr)
	var out branchesJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &out), stdout)
	require.Equal(t, "branches", out.Mode)
	require.Len(t, out.Branches, 3)
	for i, b := range out.Branches {
		require.Equal(t, i, b.Index)
		require.Equal(t, uint64(40+i), b.Seed)
		require.Equal(t, "length", b.Stop)
		require.Len(t, b.Tokens, 10)
	}
	require.Len(t, out.Steps, 9)
	require.Equal(t, 3, out.Steps[0].Queries)
	require.Positive(t, out.Steps[0].MS)

	// A pool too small for every branch ends some with a message.
	_, stderr, err = runDeft(t, append(args, "--branches", "4", "--n", "30", "--max-kv-tokens", "48")...)
	require.NoError(t, err, stderr)
	require.Regexp(t, `branch \d ended after \d+ tokens: .*KV pool full`, stderr)
}

// --beams: the prompt and the best beam; the scores on stderr; --beams 1
// is greedy; --json lists every beam with its score.
func TestGenerateBeams(t *testing.T) {
	setupCLITest(t)
	base := []string{"generate", "--validation", "--prompt", "Once upon a time", "--n", "12"}
	greedy, _, err := runDeft(t, append(base, "--temp", "0")...)
	require.NoError(t, err)
	one, stderr, err := runDeft(t, append(base, "--beams", "1")...)
	require.NoError(t, err, stderr)
	require.Equal(t, strings.Replace(greedy, " Once upon a time", " Once upon a time\n", 1), one)
	require.Contains(t, stderr, "beam 0: score ")

	stdout, stderr, err := runDeft(t, append(base, "--beams", "3", "--json")...)
	require.NoError(t, err, stderr)
	var out beamsJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &out), stdout)
	require.Equal(t, "beams", out.Mode)
	require.Equal(t, 1.0, out.LengthAlpha)
	require.Len(t, out.Beams, 3)
	for i, b := range out.Beams {
		require.Len(t, b.Tokens, 12)
		sum := 0.0
		for _, tk := range b.Tokens {
			sum += tk.LogProb
		}
		require.InDelta(t, sum/12, b.Score, 1e-9)
		if i > 0 {
			require.LessOrEqual(t, b.Score, out.Beams[i-1].Score)
		}
	}
	require.Len(t, out.Steps, 11)
}

// --draft: lookup and a draft model give greedy decoding's text at
// --temp 0 and report acceptance; --json has per-step figures.
func TestGenerateSpeculative(t *testing.T) {
	setupCLITest(t)
	base := []string{"generate", "--validation", "--prompt", "Tom had a red ball. Tom liked the ball.", "--n", "30", "--temp", "0"}
	greedy, _, err := runDeft(t, base...)
	require.NoError(t, err)
	stdout, stderr, err := runDeft(t, append(base, "--draft", "lookup", "--tree-width", "2", "--tree-depth", "3")...)
	require.NoError(t, err, stderr)
	require.Equal(t, greedy, stdout)
	require.Regexp(t, `speculative \(lookup, tree 2x3 of 6 tokens\): 30 tokens in \d+ steps after the prompt: accept length \d\.\d\d`, stderr)

	stories := testmodels.Path(t, "stories260K.gguf")
	tree := "../../replay/testdata/deft/APPS_tree_size5.json"
	stdout, stderr, err = runDeft(t, append(base, "--draft", stories, "--tree-json", tree, "--json")...)
	require.NoError(t, err, stderr)
	var out specJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &out), stdout)
	require.Equal(t, "speculative", out.Mode)
	require.Equal(t, "APPS_tree_size5.json", out.Tree)
	require.Equal(t, 5, out.TreeTokens)
	require.Equal(t, 2, out.TreeDepth)
	require.Len(t, out.Tokens, 30)
	require.Equal(t, strings.TrimSpace(strings.TrimPrefix(greedy, " Tom had a red ball. Tom liked the ball.")), out.Text)
	require.NotEmpty(t, out.Steps)
	total := 0
	for _, s := range out.Steps {
		total += s.Tokens
		require.LessOrEqual(t, s.Accepted, s.Drafted)
	}
	require.Equal(t, 29, total)
	// The target drafting for itself accepts the whole best chain (depth 2).
	require.Greater(t, out.MeanAcceptLength, 1.5)
	require.InDelta(t, float64(total)/float64(len(out.Steps)), out.TokensPerStep, 1e-9)
	require.Positive(t, out.AcceptanceRate)
}

// Mode flags that do not go together, or are out of range, are clear
// errors.
func TestGenerateModeFlags(t *testing.T) {
	setupCLITest(t)
	dir := t.TempDir()
	badTree := filepath.Join(dir, "tree.json")
	require.NoError(t, os.WriteFile(badTree, []byte(`{"Tree_Structure": [[0, 1]]}`), 0o644))
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"beams and branches", []string{"--beams", "2", "--branches", "2"}, "--branches and --beams are separate modes"},
		{"draft and beams", []string{"--beams", "2", "--draft", "lookup"}, "--beams and --draft are separate modes"},
		{"zero branches", []string{"--branches", "0"}, "--branches 0"},
		{"too many beams", []string{"--beams", "5000"}, "--beams 5000"},
		{"beams sample", []string{"--beams", "2", "--temp", "0.5"}, "--beams is deterministic: it takes no --temp"},
		{"tree without draft", []string{"--tree-width", "3"}, "--tree-width shapes the drafted trees of --draft"},
		{"tree json and width", []string{"--draft", "lookup", "--tree-json", badTree, "--tree-depth", "2"}, "takes no --tree-width or --tree-depth"},
		{"bad tree json", []string{"--draft", "lookup", "--tree-json", badTree}, "prefix [0] is not listed"},
		{"missing tree json", []string{"--draft", "lookup", "--tree-json", filepath.Join(dir, "none.json")}, "--tree-json"},
		{"bad width", []string{"--draft", "lookup", "--tree-width", "0"}, "--tree-width 0"},
		{"missing draft model", []string{"--draft", filepath.Join(dir, "none.gguf")}, "--draft"},
		{"draft vocabulary", []string{"--draft", testmodels.Path(t, "llama-2-tiny-random.gguf")}, "is not the target's"},
		{"tree pool too small", []string{"--branches", "2", "--max-kv-tokens", "1"}, "--max-kv-tokens 1 is too small"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runDeft(t, append([]string{"generate", "--validation", "--n", "4"}, tc.args...)...)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

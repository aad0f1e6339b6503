package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// `deft bench generate` runs under bench (whose own flags still work, see
// TestBenchProgressLines), writes its JSON and plot, prints a line per
// finished scenario and method, and reloads its report.
func TestBenchGenerateCommand(t *testing.T) {
	setupCLITest(t)
	dir := t.TempDir()
	js, png := filepath.Join(dir, "gen.json"), filepath.Join(dir, "gen.png")
	args := []string{"bench", "generate", "--validation", "--shape", "tiny", "--type", "f16", "--scale", "0.01",
		"--scenario", "single,prefill", "--runs", "1", "--attn-runs", "1", "--warm-up", "0", "--bandwidth", "100",
		"--json", js, "--plot", png,
		"--chunk", "32", "--gemm-inputs", "f16"} // the 40-token prefill: a 32-row gemm (f16 inputs), then 8 rows
	stdout, stderr, err := runDeft(t, args...)
	require.NoError(t, err, stderr)
	lines := regexp.MustCompile(`(?m)^bench generate: \[(\d)/4\] (\w+) (\w+): \S+ ms per step$`).FindAllStringSubmatch(stderr, -1)
	require.Len(t, lines, 4, "stderr:\n%s", stderr)
	assert.Equal(t, []string{"1", "single", "flatten"}, lines[0][1:])
	assert.Equal(t, []string{"4", "prefill", "flashdecoding"}, lines[3][1:])
	for _, want := range []string{"model tiny f16", "weight-read floor", "check flatten: 1-block slice", "\nsingle: ", "\nprefill: ", "flatten vs flashdecoding", "chunks of 32"} {
		assert.Contains(t, stdout, want)
	}
	var rep struct {
		Check     []map[string]any `json:"check"`
		Floor     float64          `json:"weight_read_floor_ns"`
		Scenarios []struct {
			Name    string           `json:"name"`
			Methods []map[string]any `json:"methods"`
		} `json:"scenarios"`
	}
	b, err := os.ReadFile(js)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &rep))
	assert.Len(t, rep.Check, 2)
	assert.Positive(t, rep.Floor)
	require.Len(t, rep.Scenarios, 2)
	assert.Equal(t, "prefill", rep.Scenarios[1].Name)
	for _, k := range []string{"step_gpu_ns", "step_wall_ns", "attention_share", "floor_fraction", "tokens_per_second", "memory_bytes"} {
		assert.Positive(t, rep.Scenarios[1].Methods[0][k], k)
	}
	st, err := os.Stat(png)
	require.NoError(t, err)
	assert.Positive(t, st.Size())

	// --load prints the saved report without a device run.
	out, _, err := runDeft(t, "bench", "generate", "--load", js)
	require.NoError(t, err)
	assert.Contains(t, out, "\nprefill: ")

	_, stderr, err = runDeft(t, append(args, "--quiet")...)
	require.NoError(t, err)
	assert.NotContains(t, stderr, "bench generate: [")
}

func TestBenchGenerateBadFlags(t *testing.T) {
	setupCLITest(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--scenario", "bogus"}, `--scenario "bogus"`},
		{[]string{"--method", "nope"}, "--method"},
		{[]string{"--scale", "2"}, "--scale 2"},
		{[]string{"--scale", "0"}, "--scale 0"},
		{[]string{"--runs", "0"}, "--runs 0"},
		{[]string{"--kv", "f8"}, "--kv"},
		{[]string{"--shape", "llama9"}, "unknown shape"},
		{[]string{"--shape", "tiny", "--type", "q2"}, "unknown weight type"},
		{[]string{"--model", "x.gguf", "--shape", "tiny"}, "not both"},
		{[]string{"--model", filepath.Join(t.TempDir(), "missing.gguf")}, "missing.gguf"},
		{[]string{"--plot", "x.pdf"}, "--plot x.pdf"},
		{[]string{"--chunk", "-1"}, "--chunk -1"},
		{[]string{"--gemm-inputs", "bf16"}, `--gemm-inputs "bf16"`},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		_, _, err := runDeft(t, append([]string{"bench", "generate"}, c.args...)...)
		require.Error(t, err, "%v", c.args)
		assert.Contains(t, err.Error(), c.want, "%v", c.args)
	}
}

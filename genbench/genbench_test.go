package genbench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/bench"
	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/modelgen"
	"github.com/deft-vk/deft/replay"
	"github.com/deft-vk/deft/treeattn"
)

// testSizes keep every scenario a few hundred tokens on lavapipe.
var testSizes = Sizes{SingleContext: 40, Prompt: 30, Branches: 5, BranchLen: 6, SpecContext: 20,
	BeamPrompt: 12, Beams: 3, BeamLen: 5, PrefillTokens: 40}

func tinyTarget(t *testing.T, typ string) (llama.Config, func(string) gguf.TensorType) {
	t.Helper()
	cfg, err := modelgen.ShapeConfig("tiny")
	require.NoError(t, err)
	typeOf, err := modelgen.TensorTypes(typ, cfg)
	require.NoError(t, err)
	return cfg, typeOf
}

// Every scenario runs under both methods with the tiny shape, and the
// report has every field filled in, in JSON, table and plot.
func TestRunEveryScenarioAndReport(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	seed := rng.Uint64()
	cfg, typeOf := tinyTarget(t, "q8_0")
	// Chunks of 16 tokens: prefill runs in several submissions.
	m, err := model.LoadRandom(d, model.RandomSpec{Config: cfg, TensorType: typeOf, Seed: seed}, model.Options{ChunkTokens: 16})
	require.NoError(t, err)
	defer m.Close()

	floor := Floor(m.StepWeightBytes(), 1e9)
	require.Positive(t, floor)
	var progress []string
	// Small token trees (the generated ones' shape) keep lavapipe quick.
	specs := SpecTrees{Spec64: &replay.SpecTree{TreeID: "test9", Parents: GeneratedTree(9)},
		Spec256: &replay.SpecTree{TreeID: "test17", Parents: GeneratedTree(17)}}
	opts := Options{Runs: 2, AttnRuns: 1, ProfileRuns: 1, WarmUp: -1, Sizes: testSizes, Seed: seed, Specs: specs,
		Methods:  []treeattn.Method{treeattn.MethodFlatten, treeattn.MethodFlashDecoding},
		Progress: func(s string, meth treeattn.Method, r *MethodResult) { progress = append(progress, s+"/"+string(meth)) }}
	res, err := Run(m, ScenarioNames(), floor, opts)
	require.NoError(t, err)
	require.Len(t, res, len(ScenarioNames()))
	assert.Len(t, progress, 2*len(ScenarioNames()))
	assert.Equal(t, treeattn.MethodFlatten, m.Options().Method, "Run leaves the model's method as it was")

	z := testSizes
	wantTokens := map[string]int{Single: 1, FewShot: z.Branches, Spec64: 9, Spec256: 17, Beams: z.Beams, Prefill: z.PrefillTokens}
	wantContext := map[string]int{Single: z.SingleContext + 1, FewShot: z.Prompt + z.Branches*(z.BranchLen+1), Spec64: z.SpecContext + 9,
		Spec256: z.SpecContext + 17, Beams: z.BeamPrompt + z.Beams*(z.BeamLen+1), Prefill: z.PrefillTokens}
	for i, s := range res {
		assert.Equal(t, ScenarioNames()[i], s.Name)
		assert.Equal(t, wantTokens[s.Name], s.StepTokens, s.Name)
		assert.Equal(t, wantContext[s.Name], s.Context, s.Name)
		assert.NotEmpty(t, s.Description)
		assert.Positive(t, s.KVBytes)
		assert.Positive(t, s.SpeedUp, s.Name)
		require.Len(t, s.Methods, 2)
		for j, r := range s.Methods {
			assert.Equal(t, string(opts.Methods[j]), r.Method)
			what := s.Name + "/" + r.Method
			assert.Positive(t, r.StepGPU, what)
			assert.Positive(t, r.StepWall, what)
			assert.Positive(t, r.Attention, what)
			assert.Less(t, r.Attention, r.StepWall, what)
			assert.True(t, r.AttentionShare > 0 && r.AttentionShare < 1, "%s: attention share %v", what, r.AttentionShare)
			assert.InDelta(t, float64(r.StepGPU)/float64(floor), r.FloorFraction, 1e-9, what)
			assert.InDelta(t, float64(s.StepTokens)/r.StepWall.Seconds(), r.TokensPerSec, 1e-6*r.TokensPerSec, what)
			assert.GreaterOrEqual(t, r.MemoryBytes, m.WeightBytes()+s.KVBytes, what)
			assert.Positive(t, r.WorkspaceBytes, what)
			assert.Len(t, r.Runs, 2)
			var names []string
			for _, k := range r.Profile {
				names = append(names, k.Name)
				assert.Positive(t, k.GPU, what+" "+k.Name)
			}
			assert.Subset(t, names, []string{"embed", "qkv", "attention", "o-proj", "down", "logits"}, what)
		}
	}

	rep := NewReport(d.Info)
	rep.Model, rep.Config, rep.KV, rep.Scenarios, rep.Runs = "tiny q8_0", cfg, "f16", res, 2
	rep.WeightBytes, rep.StepWeightBytes, rep.Bandwidth, rep.BandwidthSource, rep.Floor = m.WeightBytes(), m.StepWeightBytes(), 1e9, "test", floor
	dir := t.TempDir()
	path := filepath.Join(dir, "gen.json")
	require.NoError(t, rep.SaveJSON(path))
	var raw map[string]any
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &raw))
	for _, k := range []string{"device", "model", "targets", "weight_bytes", "step_weight_bytes", "bandwidth_bytes_per_second", "weight_read_floor_ns", "check", "scenarios", "sizes"} {
		assert.Contains(t, raw, k)
	}
	sc := raw["scenarios"].([]any)[1].(map[string]any)
	for _, k := range []string{"name", "step_tokens", "context_tokens", "kv_pool_bytes", "speedup_flatten_vs_flashdecoding", "methods"} {
		assert.Contains(t, sc, k)
	}
	meth := sc["methods"].([]any)[0].(map[string]any)
	for _, k := range []string{"method", "step_gpu_ns", "step_wall_ns", "attention_gpu_ns", "attention_share", "floor_fraction", "tokens_per_second", "memory_bytes"} {
		assert.Contains(t, meth, k)
		if k != "method" {
			assert.Positive(t, meth[k], k)
		}
	}
	back, err := LoadReport(path)
	require.NoError(t, err)
	assert.Equal(t, rep.Scenarios[2].Methods[1].StepGPU, back.Scenarios[2].Methods[1].StepGPU)

	var tab strings.Builder
	require.NoError(t, back.WriteTable(&tab))
	for _, s := range ScenarioNames() {
		assert.Contains(t, tab.String(), "\n"+s+": ")
	}
	assert.Contains(t, tab.String(), "flatten vs flashdecoding")
	assert.Contains(t, tab.String(), "flatten profile, ms")
	assert.Contains(t, tab.String(), "weight-read floor")
	assert.Contains(t, tab.String(), "targets (issue 13; set for Llama-3-8B on an H200):")
	assert.Len(t, back.Targets, 5, "every target the scenarios cover")
	for _, ext := range []string{"png", "svg"} {
		p := filepath.Join(dir, "gen."+ext)
		require.NoError(t, back.SavePlot(p))
		st, err := os.Stat(p)
		require.NoError(t, err)
		assert.Greater(t, st.Size(), int64(1000))
	}
	assert.Error(t, back.SavePlot(filepath.Join(dir, "gen.pdf")))
}

// The slice check passes on a correct model, from generated weights and
// from a file, and fails with a clear message when the GPU's weights are
// not the reference's.
func TestCheckSlice(t *testing.T) {
	d := gputest.Device(t)
	seed := gputest.Rand(t).Uint64()
	methods := []treeattn.Method{treeattn.MethodFlatten, treeattn.MethodFlashDecoding}
	cfg, typeOf := tinyTarget(t, "q4_0")
	slice, err := BuildSlice(cfg, typeOf, nil, seed)
	require.NoError(t, err)
	defer slice.Close()
	sc, err := llama.ConfigFrom(slice)
	require.NoError(t, err)
	assert.Equal(t, 1, sc.Blocks)
	assert.Equal(t, min(cfg.Vocab, SliceVocab), sc.Vocab)
	assert.Equal(t, cfg.Embd, sc.Embd)
	assert.Equal(t, cfg.FFN, sc.FFN)
	q, err := slice.Tensor("blk.0.attn_q.weight")
	require.NoError(t, err)
	assert.Equal(t, gguf.Q4_0, q.Type)

	for _, kv := range []treeattn.KVType{treeattn.KVF16, treeattn.KVF32} {
		res, err := CheckSlice(d, slice, methods, kv, seed)
		require.NoError(t, err, "kv %v", kv)
		require.Len(t, res, 2)
		for _, r := range res {
			assert.True(t, r.OK)
			assert.Less(t, r.MaxErr, Tolerance(kv))
			t.Logf("kv %v %s: %.3g", kv, r.Method, r.MaxErr)
		}
	}

	// The GPU gets another seed's weights of the same shapes and types.
	corruptForTest = func(*gguf.File) (*gguf.File, error) { return BuildSlice(cfg, typeOf, nil, seed+1) }
	defer func() { corruptForTest = nil }()
	res, err := CheckSlice(d, slice, methods[:1], treeattn.KVF16, seed)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "logits check failed")
	assert.Contains(t, err.Error(), "flatten: relative L2 error")
	require.Len(t, res, 1)
	assert.False(t, res[0].OK)
}

// A file's slice is its own block 0 and first embedding rows, and checks.
func TestCheckSliceFromFile(t *testing.T) {
	d := gputest.Device(t)
	f, err := gguf.Open(testmodels.Path(t, "stories260K.gguf"))
	require.NoError(t, err)
	defer f.Close()
	cfg, err := llama.ConfigFrom(f)
	require.NoError(t, err)
	slice, err := BuildSlice(cfg, nil, f, 1)
	require.NoError(t, err)
	defer slice.Close()
	for _, name := range []string{"blk.0.ffn_down.weight", "blk.0.attn_norm.weight", "token_embd.weight"} {
		a, err := f.Tensor(name)
		require.NoError(t, err)
		b, err := slice.Tensor(name)
		require.NoError(t, err)
		assert.Equal(t, a.Type, b.Type)
		assert.Equal(t, a.Data[:len(b.Data)], b.Data, name)
	}
	_, err = slice.Tensor("blk.1.attn_q.weight")
	assert.Error(t, err, "one block only")
	_, err = CheckSlice(d, slice, []treeattn.Method{treeattn.MethodFlatten}, treeattn.KVF32, 3)
	require.NoError(t, err)
}

func TestSizesAndOptions(t *testing.T) {
	s := DefaultSizes.Scaled(0.01)
	assert.Equal(t, Sizes{SingleContext: 40, Prompt: 40, Branches: 50, BranchLen: 4, SpecContext: 10, BeamPrompt: 15, Beams: 8, BeamLen: 5, PrefillTokens: 40}, s)
	assert.Equal(t, 1, DefaultSizes.Scaled(1e-9).SingleContext)
	assert.Equal(t, DefaultSizes, DefaultSizes.Scaled(1))

	p := GeneratedTree(64)
	require.Len(t, p, 64)
	assert.Equal(t, -1, p[0])
	for i := 1; i < len(p); i++ {
		assert.True(t, p[i] >= 0 && p[i] < i)
	}

	o := Options{Runs: -1}
	assert.Error(t, o.defaults())
	o = Options{Sizes: Sizes{SingleContext: 1}}
	assert.ErrorContains(t, o.defaults(), "at least 1")
	o = Options{}
	require.NoError(t, o.defaults())
	assert.Equal(t, 10, o.Runs)
	assert.Equal(t, 5, o.AttnRuns)
	assert.Equal(t, bench.DefaultWarmUp, o.WarmUp)
	assert.Equal(t, DefaultSizes, o.Sizes)
	assert.Equal(t, time.Duration(0), Floor(100, 0))
	assert.Equal(t, 2*time.Second, Floor(2e9, 1e9))
}

package generate

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/model/assets"
	"github.com/deft-vk/deft/replay"
	"github.com/deft-vk/deft/sample"
)

func specShapes(t *testing.T) map[string]TreeShape {
	t.Helper()
	shapes := map[string]TreeShape{}
	for _, wd := range [][2]int{{1, 1}, {1, 6}, {3, 4}} {
		s, err := WidthDepthShape(wd[0], wd[1])
		require.NoError(t, err)
		shapes[string(rune('0'+wd[0]))+"x"+string(rune('0'+wd[1]))] = s
	}
	raw, err := os.ReadFile("../replay/testdata/deft/APPS_tree_size32_2records.json")
	require.NoError(t, err)
	st, err := replay.ParseSpeculativeJSON(raw)
	require.NoError(t, err)
	s, err := ShapeFromSpecTree(st)
	require.NoError(t, err)
	require.Len(t, s.Parents, 31)
	require.Equal(t, 4, s.Depth())
	shapes["APPS32"] = s
	return shapes
}

// runSpec runs Speculative on a fresh pool sized by SpecBudget.
func runSpec(t *testing.T, l loaded, prompt []int32, opts SpecOptions) *SpecResult {
	t.Helper()
	pool := newPool(t, l.m, SpecBudget(l.m.Config(), len(prompt), opts.MaxTokens, opts.Shape, kvpool.DefaultPageTokens))
	res, err := Speculative(l.m, l.tok, pool, prompt, opts, nil)
	require.NoError(t, err)
	require.Equal(t, pool.NumPages(), pool.FreePages())
	return res
}

// requireSame requires speculative output to be the plain run's, token
// for token (texts too; log-probabilities within the model's batch
// tolerance: 1e-4 in fp32, more where verification batches run the
// cooperative-matrix gemm with f16 operands).
func requireSame(t *testing.T, m *model.Model, plain *Result, spec *SpecResult, what string) {
	t.Helper()
	tol, err := m.BatchTolerance(model.DefaultChunkTokens)
	require.NoError(t, err)
	require.Equal(t, ids(plain.Tokens), ids(spec.Tokens), what)
	require.Equal(t, plain.Stop, spec.Stop, what)
	for i, tk := range spec.Tokens {
		require.Equal(t, plain.Tokens[i].Text, tk.Text, "%s: token %d", what, i)
		require.InDelta(t, plain.Tokens[i].LogProb, tk.LogProb, tol, "%s: token %d", what, i)
	}
	// Every step after the prompt adds its accepted tokens and one more
	// (the last step may stop early).
	total := 0
	for i, s := range spec.Steps {
		require.LessOrEqual(t, s.Accepted, s.Drafted, what)
		if i < len(spec.Steps)-1 {
			require.Equal(t, s.Accepted+1, s.Tokens, what)
		}
		total += s.Tokens
	}
	require.Equal(t, len(spec.Tokens)-1, total, what)
}

// Speculative decoding with prompt lookup at temperature 0 is plain greedy
// decoding, on several prompts and tree shapes (width x depth and DeFT's
// APPS 32-token tree); lookup drafts pay off on repetitive text.
func TestSpeculativeLookupGreedy(t *testing.T) {
	l := stories(t)
	prompts := []string{"Once upon a time", "Tom had a red ball. Tom liked the ball. One day Tom", "Lily"}
	const n = 40
	shapes := specShapes(t)
	for _, text := range prompts {
		prompt := l.prompt(t, text)
		plain := l.plain(t, prompt, Options{MaxTokens: n})
		for name, shape := range shapes {
			res := runSpec(t, l, prompt, SpecOptions{MaxTokens: n, Drafter: &LookupDrafter{}, Shape: shape})
			requireSame(t, l.m, plain, res, text+" "+name)
			t.Logf("%q %s: %d steps for %d tokens, %.2f accepted/step, %.2f tokens/step, %.0f%% of drafts accepted",
				text, name, len(res.Steps), len(res.Tokens), res.MeanAccepted(), res.TokensPerStep(), 100*res.AcceptanceRate())
			if text == prompts[1] && name != "1x1" {
				require.Greater(t, res.TokensPerStep(), 1.3, "%q %s: lookup drafts help on repetitive text", text, name)
			}
		}
	}
}

// The target as its own draft model: greedy output unchanged and nearly
// every drafted best chain accepted (the draft's greedy chain is the
// target's); the draft pool is back to empty.
func TestSpeculativeSelfDraft(t *testing.T) {
	l := stories(t)
	draft := stories(t)
	const n = 40
	for _, text := range []string{"Once upon a time", "The cat sat"} {
		prompt := l.prompt(t, text)
		plain := l.plain(t, prompt, Options{MaxTokens: n})
		for name, shape := range specShapes(t) {
			if name == "1x1" {
				continue
			}
			dpool := newPool(t, draft.m, ModelDrafterBudget(len(prompt)+n, shape, kvpool.DefaultPageTokens))
			d := NewModelDrafter(draft.m, dpool)
			res := runSpec(t, l, prompt, SpecOptions{MaxTokens: n, Drafter: d, Shape: shape})
			d.Close()
			require.Equal(t, dpool.NumPages(), dpool.FreePages())
			requireSame(t, l.m, plain, res, text+" "+name)
			depth := shape.Depth()
			t.Logf("%q %s: %d steps for %d tokens, %.2f accepted/step (depth %d), %.2f tokens/step",
				text, name, len(res.Steps), len(res.Tokens), res.MeanAccepted(), depth, res.TokensPerStep())
			// Steps but the last accept a whole chain of the tree's depth.
			for i, s := range res.Steps[:len(res.Steps)-1] {
				require.GreaterOrEqual(t, s.Accepted, depth-1, "%s %s step %d", text, name, i)
			}
			require.GreaterOrEqual(t, res.TokensPerStep(), 0.8*float64(depth+1))
		}
	}
}

// At a temperature the exact rule gives Plain's sampled tokens for the
// same seed, with lookup drafts and with a draft model.
func TestSpeculativeSampled(t *testing.T) {
	l := stories(t)
	draft := stories(t)
	r := gputest.Rand(t)
	shape, err := WidthDepthShape(3, 3)
	require.NoError(t, err)
	const n = 40
	for _, text := range []string{"Once upon a time", "Tom had a red ball. Tom liked the ball."} {
		prompt := l.prompt(t, text)
		sp := sample.Params{Temp: 0.7, TopK: 40, TopP: 0.95, Seed: r.Uint64()}
		plain := l.plain(t, prompt, Options{MaxTokens: n, Sample: sp})
		res := runSpec(t, l, prompt, SpecOptions{MaxTokens: n, Sample: sp, Drafter: &LookupDrafter{}, Shape: shape})
		requireSame(t, l.m, plain, res, text+" lookup")
		dpool := newPool(t, draft.m, ModelDrafterBudget(len(prompt)+n, shape, kvpool.DefaultPageTokens))
		d := NewModelDrafter(draft.m, dpool)
		res2 := runSpec(t, l, prompt, SpecOptions{MaxTokens: n, Sample: sp, Drafter: d, Shape: shape})
		d.Close()
		requireSame(t, l.m, plain, res2, text+" self-draft")
		t.Logf("%q: lookup %.2f, self-draft %.2f tokens/step", text, res.TokensPerStep(), res2.TokensPerStep())
		require.Greater(t, res2.TokensPerStep(), 1.5)
	}
}

// The random llama-2-tiny (32000-token vocabulary) with lookup drafts:
// greedy output unchanged.
func TestSpeculativeLlama2Tiny(t *testing.T) {
	l := llama2Tiny(t)
	shape, err := WidthDepthShape(2, 4)
	require.NoError(t, err)
	prompt := l.prompt(t, "Hello world, hello world, hello")
	plain := l.plain(t, prompt, Options{MaxTokens: 24})
	res := runSpec(t, l, prompt, SpecOptions{MaxTokens: 24, Drafter: &LookupDrafter{}, Shape: shape})
	requireSame(t, l.m, plain, res, "llama-2-tiny")
	t.Logf("%d steps, %.2f tokens/step", len(res.Steps), res.TokensPerStep())
}

// A pool without room for a tree verifies the root alone (plain steps,
// the same output); one without room for the sequence ends with
// StopPoolFull. Streaming writes the prompt and text as Plain does.
func TestSpeculativePoolFull(t *testing.T) {
	l := stories(t)
	prompt := l.prompt(t, "Once upon a time")
	shape, err := WidthDepthShape(4, 4)
	require.NoError(t, err)
	const n = 30
	plain := l.plain(t, prompt, Options{MaxTokens: n})

	pool := newPool(t, l.m, pageRound(Budget(l.m.Config(), len(prompt), n), kvpool.DefaultPageTokens))
	var out bytes.Buffer
	res, err := Speculative(l.m, l.tok, pool, prompt, SpecOptions{MaxTokens: n, Drafter: &LookupDrafter{}, Shape: shape}, &out)
	require.NoError(t, err)
	requireSame(t, l.m, plain, res, "tight pool")
	require.Equal(t, " Once upon a time"+Text(plain.Tokens), out.String())

	small := newPool(t, l.m, 16)
	res, err = Speculative(l.m, l.tok, small, prompt, SpecOptions{MaxTokens: n, Drafter: &LookupDrafter{}, Shape: shape}, nil)
	require.NoError(t, err)
	require.Equal(t, StopPoolFull, res.Stop)
	require.Contains(t, res.Err, "KV pool full")
	require.Equal(t, ids(plain.Tokens[:len(res.Tokens)]), ids(res.Tokens))
	require.Equal(t, small.NumPages(), small.FreePages())
}

// Lookup drafting proposes what followed the last n-gram's occurrences,
// ranked by how many share a branch, most recent first; the shape's
// ranks pick among them.
func TestLookupDrafter(t *testing.T) {
	d := &LookupDrafter{}
	shape, err := WidthDepthShape(3, 3)
	require.NoError(t, err)
	// "1 2 3" occurs twice before the end with continuations 4 5 and 7 8;
	// the last 3-gram is "1 2 3".
	ctx := []int32{1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8, 1, 2, 3}
	tree, err := d.Draft(ctx, shape, 3)
	require.NoError(t, err)
	// Ties in count: the most recent occurrence (7 8 ...) first.
	require.Equal(t, DraftTree{Parents: []int{-1, -1, 0, 1, 2, 3}, Tokens: []int32{7, 4, 8, 5, 1, 9}}, tree)
	// Depth 1 keeps the first level only.
	tree, err = d.Draft(ctx, shape, 1)
	require.NoError(t, err)
	require.Equal(t, []int32{7, 4}, tree.Tokens)
	// No earlier occurrence of any n-gram: no tree.
	tree, err = d.Draft([]int32{1, 2, 3}, shape, 3)
	require.NoError(t, err)
	require.Zero(t, tree.Len())
	// Counts rank: "5" follows "2" twice, "6" once (no longer n-gram
	// recurs).
	tree, err = d.Draft([]int32{2, 6, 9, 2, 5, 8, 2, 5, 7, 2}, shape, 1)
	require.NoError(t, err)
	require.Equal(t, []int32{5, 6}, tree.Tokens)

	order, parents, tokens := dfsOrder(DraftTree{Parents: []int{-1, -1, 0, 1, 2, 3}, Tokens: []int32{7, 4, 8, 5, 1, 9}}, 3)
	require.Equal(t, []int{-1, 0, 2, 4, 1, 3, 5}, order)
	require.Equal(t, []int{-1, 0, 1, 2, 0, 4, 5}, parents)
	require.Equal(t, []int32{3, 7, 8, 1, 4, 5, 9}, tokens)
}

// Shapes: width x depth, DeFT's files, and bad shapes.
func TestTreeShapes(t *testing.T) {
	s, err := WidthDepthShape(2, 3)
	require.NoError(t, err)
	require.Equal(t, TreeShape{Parents: []int{-1, 0, 1, -1, 3, 4}, Ranks: []int{0, 0, 0, 1, 0, 0}}, s)
	require.Equal(t, 3, s.Depth())
	_, err = WidthDepthShape(0, 3)
	require.ErrorContains(t, err, "width 0")
	st, err := replay.ParseSpeculativeJSON([]byte(`{"Tree_Structure": [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]}`))
	require.NoError(t, err)
	s, err = ShapeFromSpecTree(st)
	require.NoError(t, err)
	require.Equal(t, TreeShape{Parents: []int{-1, -1, 0, 0, 1, 2}, Ranks: []int{0, 1, 0, 1, 0, 0}}, s)
	require.ErrorContains(t, TreeShape{Parents: []int{-1, -1}, Ranks: []int{0, 0}}.Check(), "repeats rank 0")
	require.ErrorContains(t, TreeShape{Parents: []int{1}, Ranks: []int{0}}.Check(), "parent 1")
}

// Near the end of the model's context the drafted trees shrink so that no
// position passes it, and the output stops with StopContext where Plain
// does, with the same tokens. (stories260K with its context cut to 160
// tokens in the GGUF metadata, to keep the test short.)
func TestSpeculativeContext(t *testing.T) {
	const ctxLen = 160
	l := load(t, shortContext(t, ctxLen))
	require.Equal(t, ctxLen, l.m.Config().ContextLen)
	unit := l.tok.Encode(" Tom had a red ball.", false)
	prompt := []int32{l.tok.BOS()}
	for len(prompt)+len(unit) < ctxLen-20 {
		prompt = append(prompt, unit...)
	}
	shape, err := WidthDepthShape(2, 8)
	require.NoError(t, err)
	const n = 40
	plain := l.plain(t, prompt, Options{MaxTokens: n})
	require.Equal(t, StopContext, plain.Stop)
	rec := &depthRecorder{Drafter: &LookupDrafter{}}
	res := runSpec(t, l, prompt, SpecOptions{MaxTokens: n, Drafter: rec, Shape: shape})
	requireSame(t, l.m, plain, res, "context")
	require.Equal(t, ctxLen, len(prompt)+len(res.Tokens))
	t.Logf("%d prompt tokens, %d steps for %d tokens", len(prompt), len(res.Steps), len(res.Tokens))
	// The root sits at position len(ctx)-1: its deepest draft at
	// len(ctx)-1+maxDepth, the last position of the context at most.
	capped := false
	for _, c := range rec.calls {
		require.LessOrEqual(t, c.ctx-1+c.maxDepth, ctxLen-1)
		capped = capped || c.maxDepth < shape.Depth()
	}
	require.True(t, capped, "the context limited some tree")
}

// depthRecorder records the context length and depth limit of each Draft.
type depthRecorder struct {
	Drafter
	calls []struct{ ctx, maxDepth int }
}

func (d *depthRecorder) Draft(ctx []int32, shape TreeShape, maxDepth int) (DraftTree, error) {
	d.calls = append(d.calls, struct{ ctx, maxDepth int }{len(ctx), maxDepth})
	return d.Drafter.Draft(ctx, shape, maxDepth)
}

// shortContext returns stories260K with llama.context_length set to n.
func shortContext(t *testing.T, n int) *gguf.File {
	t.Helper()
	src, err := gguf.FromBytes(assets.Stories260KName, assets.Stories260K)
	require.NoError(t, err)
	defer src.Close()
	w := gguf.NewWriter()
	for _, kv := range src.Metadata() {
		v := kv.Value
		if kv.Key == "llama.context_length" {
			v = uint32(n)
		}
		require.NoError(t, w.SetKV(kv.Key, v))
	}
	for _, tn := range src.Tensors() {
		require.NoError(t, w.AddTensor(tn.Name, tn.Type, tn.Dims, tn.Data))
	}
	path := filepath.Join(t.TempDir(), "stories260K-ctx.gguf")
	require.NoError(t, w.WriteFile(path))
	f, err := gguf.Open(path)
	require.NoError(t, err)
	return f
}

package generate

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/internal/testmodels"
	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/model"
	"github.com/deft-vk/deft/model/assets"
	"github.com/deft-vk/deft/tokenizer"
	"github.com/deft-vk/deft/treeattn"
)

// loaded is a model with its tokenizer.
type loaded struct {
	m   *model.Model
	tok *tokenizer.Tokenizer
}

// stories loads the embedded stories260K (f32 KV, as deft generate's
// default).
func stories(t *testing.T) loaded {
	t.Helper()
	f, err := gguf.FromBytes(assets.Stories260KName, assets.Stories260K)
	require.NoError(t, err)
	return load(t, f)
}

// llama2Tiny loads the random llama-2-tiny model (32000-token vocabulary).
func llama2Tiny(t *testing.T) loaded {
	t.Helper()
	f, err := gguf.Open(testmodels.Path(t, "llama-2-tiny-random.gguf"))
	require.NoError(t, err)
	return load(t, f)
}

func load(t *testing.T, f *gguf.File) loaded {
	t.Helper()
	t.Cleanup(func() { f.Close() })
	d := gputest.Device(t)
	m, err := model.Load(d, f, model.Options{KV: treeattn.KVF32})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	tok, err := model.TokenizerFrom(f)
	require.NoError(t, err)
	return loaded{m: m, tok: tok}
}

// newPool makes a pool of n tokens, checked to be empty again at the end
// of the test.
func newPool(t *testing.T, m *model.Model, n int) *kvpool.Pool {
	t.Helper()
	p, err := model.NewPool(m, n)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.Equal(t, p.NumPages(), p.FreePages(), "pages still in use after the run")
		p.Close()
	})
	return p
}

func (l loaded) prompt(t *testing.T, text string) []int32 {
	t.Helper()
	ids, err := Prompt(l.tok, l.m.Config(), text)
	require.NoError(t, err)
	return ids
}

// plain runs Plain on a fresh pool.
func (l loaded) plain(t *testing.T, prompt []int32, opts Options) *Result {
	t.Helper()
	pool := newPool(t, l.m, Budget(l.m.Config(), len(prompt), opts.MaxTokens))
	res, err := Plain(l.m, l.tok, pool, prompt, opts, nil)
	require.NoError(t, err)
	require.Equal(t, pool.NumPages(), pool.FreePages())
	return res
}

func ids(tokens []Token) []int32 {
	out := make([]int32, len(tokens))
	for i, t := range tokens {
		out[i] = t.ID
	}
	return out
}

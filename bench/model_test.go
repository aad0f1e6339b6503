package bench

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/treeattn"
)

func TestResolveModelPresets(t *testing.T) {
	for _, want := range Models {
		m, err := ResolveModel(want.Name, ModelFlags{})
		require.NoError(t, err)
		assert.Equal(t, want, m)
	}
	m, err := ResolveModel("llama3-8b", ModelFlags{})
	require.NoError(t, err)
	assert.Equal(t, treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}, m.Shape)
	assert.Equal(t, 32, m.Layers)
	assert.Equal(t, "llama3-8b (32 q heads, 8 kv heads, dim 128, 32 layers)", m.String())
}

func TestResolveModelOverrides(t *testing.T) {
	m, err := ResolveModel("llama3-8b", ModelFlags{Layers: 2, HeadDim: 64})
	require.NoError(t, err)
	assert.Equal(t, Model{Name: "llama3-8b[head-dim 64, layers 2]", Shape: treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 64}, Layers: 2}, m)

	// A flag equal to the preset's value changes nothing, not even the name.
	m, err = ResolveModel("llama2-7b", ModelFlags{QHeads: 32})
	require.NoError(t, err)
	assert.Equal(t, "llama2-7b", m.Name)
}

func TestResolveModelCustom(t *testing.T) {
	m, err := ResolveModel("", ModelFlags{QHeads: 2, KVHeads: 2, HeadDim: 64})
	require.NoError(t, err)
	assert.Equal(t, Model{Name: "custom", Shape: treeattn.Shape{QHeads: 2, KVHeads: 2, HeadDim: 64}, Layers: 1}, m)

	m, err = ResolveModel("custom", ModelFlags{QHeads: 8, KVHeads: 2, HeadDim: 128, Layers: 40})
	require.NoError(t, err)
	assert.Equal(t, 40, m.Layers)
	assert.Equal(t, 4, m.Shape.GroupSize())
}

func TestResolveModelErrors(t *testing.T) {
	for _, tc := range []struct {
		name, preset string
		f            ModelFlags
		want         string
	}{
		{"missing shape", "", ModelFlags{QHeads: 2}, "--kv-heads, --head-dim"},
		{"unknown preset", "gpt-5", ModelFlags{}, `unknown model "gpt-5"`},
		{"negative", "llama3-8b", ModelFlags{Layers: -1}, "--layers -1"},
		{"gqa", "", ModelFlags{QHeads: 3, KVHeads: 2, HeadDim: 64}, "not a multiple of kv heads"},
		{"head dim", "", ModelFlags{QHeads: 2, KVHeads: 2, HeadDim: 62}, "not a multiple of 4"},
		{"override breaks gqa", "llama3-8b", ModelFlags{KVHeads: 5}, "not a multiple of kv heads"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ResolveModel(tc.preset, tc.f)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

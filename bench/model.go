package bench

import (
	"fmt"
	"strings"

	"github.com/deft-vk/deft/treeattn"
)

// Model is an attention shape: the heads of one layer and the number of
// layers a decoding step runs.
type Model struct {
	Name   string         `json:"name"`
	Shape  treeattn.Shape `json:"shape"`
	Layers int            `json:"layers"`
}

// String describes the model, e.g. "llama3-8b (32 q heads, 8 kv heads, dim
// 128, 32 layers)".
func (m Model) String() string {
	return fmt.Sprintf("%s (%d q heads, %d kv heads, dim %d, %d layers)", m.Name, m.Shape.QHeads, m.Shape.KVHeads, m.Shape.HeadDim, m.Layers)
}

// Validate checks the shape (treeattn.Shape.Validate, head dim a multiple
// of 4) and that there is at least one layer.
func (m Model) Validate() error {
	if err := m.Shape.Validate(); err != nil {
		return fmt.Errorf("model %s: %w", m.Name, err)
	}
	if m.Shape.HeadDim%4 != 0 {
		return fmt.Errorf("model %s: head dim %d is not a multiple of 4", m.Name, m.Shape.HeadDim)
	}
	if m.Layers < 1 || m.Layers > treeattn.MaxShapeValue {
		return fmt.Errorf("model %s: %d layers, want 1..%d", m.Name, m.Layers, treeattn.MaxShapeValue)
	}
	return nil
}

// Models are the presets.
var Models = []Model{
	{"llama3-8b", treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}, 32},
	{"llama2-7b", treeattn.Shape{QHeads: 32, KVHeads: 32, HeadDim: 128}, 32},
}

// FindModel returns a preset by name.
func FindModel(name string) (Model, error) {
	var names []string
	for _, m := range Models {
		if m.Name == name {
			return m, nil
		}
		names = append(names, m.Name)
	}
	return Model{}, fmt.Errorf("unknown model %q (presets: %s)", name, strings.Join(names, ", "))
}

// ModelFlags are the shape flags of `deft bench`; zero fields are unset.
type ModelFlags struct {
	QHeads, KVHeads, HeadDim, Layers int
}

func (f ModelFlags) any() bool {
	return f.QHeads != 0 || f.KVHeads != 0 || f.HeadDim != 0 || f.Layers != 0
}

// ResolveModel returns the model a run measures. With a preset name, the
// set flags override the preset's fields (the name then lists them). With
// preset "" (or "custom") the shape comes from the flags alone: --q-heads,
// --kv-heads and --head-dim are required and --layers defaults to 1.
// Negative values are errors, and the result must pass Model.Validate.
func ResolveModel(preset string, f ModelFlags) (Model, error) {
	for _, v := range []struct {
		name string
		v    int
	}{{"q-heads", f.QHeads}, {"kv-heads", f.KVHeads}, {"head-dim", f.HeadDim}, {"layers", f.Layers}} {
		if v.v < 0 {
			return Model{}, fmt.Errorf("--%s %d: must be positive", v.name, v.v)
		}
	}
	var m Model
	if preset == "" || preset == "custom" {
		var missing []string
		if f.QHeads == 0 {
			missing = append(missing, "--q-heads")
		}
		if f.KVHeads == 0 {
			missing = append(missing, "--kv-heads")
		}
		if f.HeadDim == 0 {
			missing = append(missing, "--head-dim")
		}
		if len(missing) > 0 {
			return Model{}, fmt.Errorf("a model without a preset needs %s (or --model with a preset)", strings.Join(missing, ", "))
		}
		m = Model{Name: "custom", Shape: treeattn.Shape{QHeads: f.QHeads, KVHeads: f.KVHeads, HeadDim: f.HeadDim}, Layers: max(f.Layers, 1)}
	} else {
		var err error
		if m, err = FindModel(preset); err != nil {
			return Model{}, err
		}
		if f.any() {
			var set []string
			over := func(name string, dst *int, v int) {
				if v != 0 && v != *dst {
					*dst = v
					set = append(set, fmt.Sprintf("%s %d", name, v))
				}
			}
			over("q-heads", &m.Shape.QHeads, f.QHeads)
			over("kv-heads", &m.Shape.KVHeads, f.KVHeads)
			over("head-dim", &m.Shape.HeadDim, f.HeadDim)
			over("layers", &m.Layers, f.Layers)
			if len(set) > 0 {
				m.Name += "[" + strings.Join(set, ", ") + "]"
			}
		}
	}
	if err := m.Validate(); err != nil {
		return Model{}, err
	}
	return m, nil
}

package model

import (
	"errors"
	"fmt"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/modelgen"
	"github.com/deft-vk/deft/vk"
)

// RandomSpec describes a random model: its hyper-parameters, the GGUF type
// of each tensor by name (modelgen.TensorTypes), and the generator's seed.
type RandomSpec struct {
	Config     llama.Config
	TensorType func(name string) gguf.TensorType
	Seed       uint64
}

// LoadRandom makes the model that modelgen would write for s, with its
// weights generated directly on the device by the weight_fill kernel
// (no file, no host copy): the same bytes, so its logits equal those of
// Load on the written file.
func LoadRandom(d *vk.Device, s RandomSpec, opts Options) (*Model, error) {
	if d == nil {
		return nil, errors.New("model: load random: nil device")
	}
	if s.TensorType == nil {
		return nil, errors.New("model: load random: no tensor types")
	}
	c := s.Config
	if c.Blocks <= 0 || c.Embd <= 0 || c.FFN <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.HeadDim <= 0 || c.Vocab <= 0 ||
		c.Heads%c.KVHeads != 0 || c.RopeDims%2 != 0 || c.RopeDims > c.HeadDim {
		return nil, fmt.Errorf("model: load random: invalid config %+v", c)
	}
	if c.HeadDimV == 0 {
		c.HeadDimV = c.HeadDim
	}
	if c.HeadDimV != c.HeadDim {
		return nil, fmt.Errorf("model: load random: value head size %d differs from key head size %d", c.HeadDimV, c.HeadDim)
	}
	return build(d, c, &randomSource{spec: s}, opts)
}

// randomSource generates weights with modelgen's generator.
type randomSource struct {
	spec RandomSpec
}

func (s *randomSource) label() string { return fmt.Sprintf("random model (seed %d)", s.spec.Seed) }

func (s *randomSource) tensorType(name string) (gguf.TensorType, error) {
	return s.spec.TensorType(name), nil
}

func (s *randomSource) fill(d *vk.Device, w *weight, prog *progress) error {
	p := modelgen.TensorParams(s.spec.Seed, w.name, w.typ, []uint64{uint64(w.cols), uint64(w.rows)})
	return fillWeightHost(w, p, prog)
}

// fillWeightHost generates a weight on the host in chunks and uploads it.
func fillWeightHost(w *weight, p modelgen.Params, prog *progress) error {
	rb := uint64(w.rowBytes)
	rowsPerChunk := max(1, uploadChunkBytes/rb)
	buf := make([]byte, min(rowsPerChunk, uint64(w.rows))*rb)
	for _, part := range w.parts {
		for r := uint64(0); r < uint64(part.rows); r += rowsPerChunk {
			n := min(rowsPerChunk, uint64(part.rows)-r)
			chunk := buf[:n*rb]
			if err := modelgen.Fill(chunk, w.typ, p, (uint64(part.row0)+r)*rb); err != nil {
				return err
			}
			if err := part.buf.Write(r*rb, chunk); err != nil {
				return err
			}
			prog.add(uint64(len(chunk)))
		}
	}
	return nil
}

func (s *randomSource) vector(name string, n int) ([]float32, error) {
	typ := s.spec.TensorType(name)
	dims := []uint64{uint64(n)}
	size, err := typ.RowBytes(uint64(n))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	data := make([]byte, size)
	if err := modelgen.Fill(data, typ, modelgen.TensorParams(s.spec.Seed, name, typ, dims), 0); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return decodeFloats(typ, data, n)
}

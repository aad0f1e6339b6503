package model

import (
	"errors"
	"fmt"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/kernels"
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
	rec, err := d.NewRecorder()
	if err != nil {
		return nil, fmt.Errorf("model: load random: %w", err)
	}
	defer rec.Close()
	return build(d, c, &randomSource{spec: s, rec: rec, ops: newOps(d)}, opts)
}

// randomSource generates weights with modelgen's generator: matrices on the
// device (weight_fill), norms on the host.
type randomSource struct {
	spec RandomSpec
	rec  *vk.Recorder
	ops  *ops
}

func (s *randomSource) label() string { return fmt.Sprintf("random model (seed %d)", s.spec.Seed) }

func (s *randomSource) tensorType(name string) (gguf.TensorType, error) {
	return s.spec.TensorType(name), nil
}

func (s *randomSource) fill(d *vk.Device, w *weight, prog *progress) error {
	p := modelgen.TensorParams(s.spec.Seed, w.name, w.typ, []uint64{uint64(w.cols), uint64(w.rows)})
	return fillWeightDevice(s.ops, s.rec, w, p, prog)
}

// fillWeightDevice generates a weight on the device, one dispatch per part
// (a regrouped weight: per slab of rows, through the host, see fillRegrouped).
func fillWeightDevice(o *ops, rec *vk.Recorder, w *weight, p modelgen.Params, prog *progress) error {
	if w.regrouped {
		return fillRegrouped(o, rec, w, p, prog)
	}
	if w.dataBytes() > 1<<32-4 {
		return fmt.Errorf("%d bytes: weight_fill addresses bytes in 32 bits", w.dataBytes())
	}
	pipe, err := o.pipeline(kernels.WeightFill, kernels.SpecValues{"local_size_x": fillGroup, "TYPE": uint32(w.typ)})
	if err != nil {
		return err
	}
	if err := rec.Reset(); err != nil {
		return err
	}
	rb := uint64(w.rowBytes)
	norm := uint32(0)
	if p.Norm {
		norm = 1
	}
	for _, part := range w.parts {
		n := uint64(part.rows) * rb
		words := (n + 3) / 4 // the last word may spill into the part's padding
		groups := min(ceilDiv64(words, fillGroup), 65535)
		if ceilDiv64(words, groups*fillGroup) > kernels.GridStrideSteps {
			return fmt.Errorf("%d words exceed weight_fill's grid", words)
		}
		push := kernels.WeightFillPush{Key: p.Key, Norm: norm, Exp: p.Exp, ByteBase: uint32(uint64(part.row0) * rb), Words: uint32(words)}
		if err := pipe.Dispatch(rec, [3]uint32{uint32(groups), 1, 1}, push, part.rng(w.rowBytes)); err != nil {
			return err
		}
	}
	if err := rec.Submit(); err != nil {
		return err
	}
	prog.add(w.dataBytes())
	return nil
}

// fillRegrouped generates a weight kept in the grouped layout: weight_fill
// writes GGUF blocks, so slabs of rows are generated into a scratch buffer,
// read back, regrouped and uploaded (the bytes equal those of the file
// modelgen writes, regrouped as Load regroups them).
func fillRegrouped(o *ops, rec *vk.Recorder, w *weight, p modelgen.Params, prog *progress) error {
	frb, rb := w.ggufRowBytes(), uint64(w.rowBytes)
	if frb*uint64(w.rows) > 1<<32-4 {
		return fmt.Errorf("%d bytes: weight_fill addresses bytes in 32 bits", frb*uint64(w.rows))
	}
	pipe, err := o.pipeline(kernels.WeightFill, kernels.SpecValues{"local_size_x": fillGroup, "TYPE": uint32(w.typ)})
	if err != nil {
		return err
	}
	slabRows := max(1, uploadChunkBytes/frb)
	tmp, err := o.d.NewBuffer(min(slabRows, uint64(w.rows))*frb + wordPad)
	if err != nil {
		return err
	}
	defer tmp.Close()
	host := make([]byte, min(slabRows, uint64(w.rows))*frb)
	norm := uint32(0)
	if p.Norm {
		norm = 1
	}
	for _, part := range w.parts {
		for r0 := uint64(0); r0 < uint64(part.rows); r0 += slabRows {
			n := min(slabRows, uint64(part.rows)-r0)
			words := (n*frb + 3) / 4
			groups := min(ceilDiv64(words, fillGroup), 65535)
			if ceilDiv64(words, groups*fillGroup) > kernels.GridStrideSteps {
				return fmt.Errorf("%d words exceed weight_fill's grid", words)
			}
			if err := rec.Reset(); err != nil {
				return err
			}
			push := kernels.WeightFillPush{Key: p.Key, Norm: norm, Exp: p.Exp, ByteBase: uint32((uint64(part.row0) + r0) * frb),
				Words: uint32(words)}
			if err := pipe.Dispatch(rec, [3]uint32{uint32(groups), 1, 1}, push, tmp.All()); err != nil {
				return err
			}
			if err := rec.Submit(); err != nil {
				return err
			}
			if err := tmp.Read(0, host[:n*frb]); err != nil {
				return err
			}
			sub := weightPart{buf: part.buf, off: part.off + r0*rb, row0: part.row0 + int(r0), rows: int(n)}
			if err := w.writeRows(sub, host[:n*frb], prog); err != nil {
				return err
			}
		}
	}
	return nil
}

// fillGroup is weight_fill's workgroup size.
const fillGroup = 64

func ceilDiv64(a, b uint64) uint64 { return (a + b - 1) / b }

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

package treeattn

import (
	"fmt"
	"math"
)

// The vocabulary that tree attention, the KV pool and the CLI share: head
// layouts, KV element types and the limits of the kernels.

// MaxShapeValue is the largest QHeads, KVHeads or HeadDim that
// Shape.Validate accepts.
const MaxShapeValue = 1 << 16

// Shape gives the attention head layout: QHeads query heads and KVHeads
// key/value heads of HeadDim elements each. With grouped-query attention
// (QHeads > KVHeads) query head h reads KV head h / (QHeads / KVHeads).
type Shape struct {
	QHeads, KVHeads, HeadDim int
}

// Validate checks that all sizes are in [1, MaxShapeValue] and that KVHeads
// divides QHeads.
func (s Shape) Validate() error {
	if s.QHeads < 1 || s.KVHeads < 1 || s.HeadDim < 1 {
		return fmt.Errorf("validate shape %+v: head counts and head dim must be positive", s)
	}
	if s.QHeads > MaxShapeValue || s.KVHeads > MaxShapeValue || s.HeadDim > MaxShapeValue {
		return fmt.Errorf("validate shape %+v: sizes must be at most %d", s, MaxShapeValue)
	}
	if s.QHeads%s.KVHeads != 0 {
		return fmt.Errorf("validate shape %+v: q heads %d not a multiple of kv heads %d", s, s.QHeads, s.KVHeads)
	}
	return nil
}

// GroupSize returns QHeads / KVHeads, the number of query heads sharing one
// KV head.
func (s Shape) GroupSize() int {
	if s.KVHeads <= 0 {
		return 0
	}
	return s.QHeads / s.KVHeads
}

// DefaultScale returns the conventional softmax scale 1/sqrt(HeadDim).
func (s Shape) DefaultScale() float64 {
	return 1 / math.Sqrt(float64(s.HeadDim))
}

// MaxHeadDim is the largest head dim partial_attn takes (its tiles hold
// whole rows of Q, K and V in shared memory).
const MaxHeadDim = 512

// CheckHeadDim applies the kernels' rule on head dims: a multiple of 4 (K
// and V are read as vec4s) and at most MaxHeadDim. Every head dim a pool
// accepts can be planned.
func CheckHeadDim(d int) error {
	if d < 4 || d%4 != 0 || d > MaxHeadDim {
		return fmt.Errorf("head dim %d must be a multiple of 4 and at most %d", d, MaxHeadDim)
	}
	return nil
}

// KVType is the element type of the K/V pool.
type KVType int

const (
	// KVF16 stores K and V as IEEE half floats.
	KVF16 KVType = iota
	// KVF32 stores K and V as 32-bit floats.
	KVF32
)

// ParseKVType reads a KV type's name ("f16" or "f32").
func ParseKVType(s string) (KVType, error) {
	switch s {
	case "f16":
		return KVF16, nil
	case "f32":
		return KVF32, nil
	}
	return 0, fmt.Errorf("unknown KV type %q: want f16 or f32", s)
}

func (k KVType) String() string {
	if k == KVF32 {
		return "f32"
	}
	return "f16"
}

// Bytes is the size of one element.
func (k KVType) Bytes() int {
	if k == KVF32 {
		return 4
	}
	return 2
}

// Tolerances of the kernels' output on relative L2 error against the
// float64 reference (Reference), by KV type.
const (
	TolF32 = 1e-5
	TolF16 = 2e-3
)

// Tolerance returns the error bound of the KV type.
func (k KVType) Tolerance() float64 {
	if k == KVF32 {
		return TolF32
	}
	return TolF16
}

package treeattn

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// MaxShapeValue is the largest QHeads, KVHeads or HeadDim that
// Shape.Validate accepts.
const MaxShapeValue = 1 << 16

// MaxHeadDim is the largest head dim the kernels run (ChooseTiles), which
// must also be a multiple of 4: Q, K and V rows are read as vec4s.
const MaxHeadDim = 512

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

// Reference computes tree attention in float64 on the CPU. q is
// [query][qhead][dim] with one row per t.Queries entry, k and v are the KV
// pool [slot][kvhead][dim] (float32 values; fp16 inputs are converted by the
// caller first), and the result is [query][qhead][dim]: for every query and
// query head, softmax(scale * q·k) over the tokens the query attends to (see
// Tree.QuerySlots) applied to the corresponding v rows. The softmax
// subtracts the maximum score, so large scores do not overflow.
//
// The KV pool has len(k) / (KVHeads*HeadDim) slots, which must cover every
// slot of the tree; the tree must pass Validate for that pool size and have
// all slots assigned. scale must be finite and positive (see
// Shape.DefaultScale). Non-finite input values propagate to the output.
func Reference(t *Tree, s Shape, q, k, v []float32, scale float64) ([]float64, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("reference attention: %w", err)
	}
	if math.IsNaN(scale) || math.IsInf(scale, 0) || scale <= 0 {
		return nil, fmt.Errorf("reference attention: scale %v must be finite and positive", scale)
	}
	if t == nil {
		return nil, errors.New("reference attention: nil tree")
	}
	kvStride := s.KVHeads * s.HeadDim
	if len(k)%kvStride != 0 {
		return nil, fmt.Errorf("reference attention: len(k) = %d is not a multiple of kv heads * head dim = %d", len(k), kvStride)
	}
	if len(v) != len(k) {
		return nil, fmt.Errorf("reference attention: len(v) = %d differs from len(k) = %d", len(v), len(k))
	}
	numSlots := len(k) / kvStride
	if err := t.Validate(numSlots); err != nil {
		return nil, fmt.Errorf("reference attention: %w", err)
	}
	if !t.SlotsAssigned() {
		return nil, errors.New("reference attention: tree has nodes without slots (call AssignContiguousSlots)")
	}
	qStride := s.QHeads * s.HeadDim
	if want := len(t.Queries) * qStride; len(q) != want {
		return nil, fmt.Errorf("reference attention: len(q) = %d, want %d queries * %d q heads * %d dim = %d",
			len(q), len(t.Queries), s.QHeads, s.HeadDim, want)
	}

	out := make([]float64, len(q))
	workers := 1
	if work := t.SumPathLengths() * qStride; work > 1<<16 {
		workers = min(runtime.GOMAXPROCS(0), len(t.Queries))
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := referenceWorker{t: t, s: s, q: q, k: k, v: v, scale: scale, out: out}
			for {
				qi := int(next.Add(1) - 1)
				if qi >= len(t.Queries) {
					return
				}
				r.query(qi)
			}
		}()
	}
	wg.Wait()
	return out, nil
}

// referenceWorker holds the scratch buffers of one Reference goroutine.
type referenceWorker struct {
	t       *Tree
	s       Shape
	q, k, v []float32
	scale   float64
	out     []float64
	scores  []float64
	acc     []float64
}

// query computes all heads of query qi into r.out.
func (r *referenceWorker) query(qi int) {
	s := r.s
	d := s.HeadDim
	slots := r.t.QuerySlots(qi)
	if cap(r.scores) < len(slots) {
		r.scores = make([]float64, len(slots))
	}
	scores := r.scores[:len(slots)]
	if r.acc == nil {
		r.acc = make([]float64, d)
	}
	acc := r.acc
	group := s.QHeads / s.KVHeads
	for h := 0; h < s.QHeads; h++ {
		kvh := h / group
		qrow := r.q[(qi*s.QHeads+h)*d : (qi*s.QHeads+h+1)*d]
		maxScore := math.Inf(-1)
		for j, slot := range slots {
			base := (int(slot)*s.KVHeads + kvh) * d
			krow := r.k[base : base+d]
			dot := 0.0
			for i, x := range qrow {
				dot += float64(x) * float64(krow[i])
			}
			sc := r.scale * dot
			scores[j] = sc
			maxScore = max(maxScore, sc)
		}
		clear(acc)
		sum := 0.0
		for j, slot := range slots {
			w := math.Exp(scores[j] - maxScore)
			sum += w
			base := (int(slot)*s.KVHeads + kvh) * d
			for i, x := range r.v[base : base+d] {
				acc[i] += w * float64(x)
			}
		}
		o := r.out[(qi*s.QHeads+h)*d : (qi*s.QHeads+h+1)*d]
		for i := range o {
			o[i] = acc[i] / sum
		}
	}
}

// RelativeL2 returns ||got - want|| / ||want|| in the Euclidean norm. It
// returns +Inf when the lengths differ or any element of got or want is NaN
// or infinite. When want is all zeros it returns ||got|| (the absolute
// error).
func RelativeL2(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var diff, norm float64
	for i, g := range got {
		gf, w := float64(g), want[i]
		if math.IsNaN(gf) || math.IsInf(gf, 0) || math.IsNaN(w) || math.IsInf(w, 0) {
			return math.Inf(1)
		}
		diff += (gf - w) * (gf - w)
		norm += w * w
	}
	if norm == 0 {
		return math.Sqrt(diff)
	}
	return math.Sqrt(diff / norm)
}

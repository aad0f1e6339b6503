// Package conformance checks that the attention kernels compute the right
// thing on a device: every method against the float64 CPU reference on fresh
// random inputs, outputs poisoned with NaN before each run, and two runs
// required to be bit-identical.
package conformance

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// Tolerances on relative L2 error against the float64 reference.
const (
	TolF32 = treeattn.TolF32
	TolF16 = treeattn.TolF16
)

// Tolerance returns the error bound for a KV type.
func Tolerance(kv treeattn.KVType) float64 { return kv.Tolerance() }

// Case is one conformance check.
type Case struct {
	Name   string
	Tree   *treeattn.Tree
	Method treeattn.Method
	Shape  treeattn.Shape
	KV     treeattn.KVType
	Block  int // 0: automatic
	// Variant asks for a partial_attn variant ("": the device's choice;
	// see treeattn.Config.KernelVariant).
	Variant string
	// Reduce selects the reduction (treeattn.Config.Reduce; "": auto).
	Reduce string
}

// Result is the outcome of a case.
type Result struct {
	Case      string          `json:"case"`
	Method    treeattn.Method `json:"method"`
	Variant   string          `json:"variant"` // the partial_attn variant that ran
	Reduce    string          `json:"reduce"`  // "fused" (in partial_attn) or "separate" (reduce_partials)
	KV        string          `json:"kv"`
	HeadDim   int             `json:"head_dim"`
	GQA       int             `json:"gqa"`
	Queries   int             `json:"queries"`
	Tokens    int             `json:"tokens"`
	RelL2     float64         `json:"rel_l2"`
	Tolerance float64         `json:"tolerance"`
	Identical bool            `json:"bit_identical"`
	Pass      bool            `json:"pass"`
	Error     string          `json:"error,omitempty"`
	Elapsed   time.Duration   `json:"elapsed_ns"`
}

// Inputs are random Q, K and V for a tree and shape; K and V are rounded to
// the KV type so the reference sees exactly what the GPU reads.
type Inputs struct {
	Q, K, V []float32
	KBits   []uint16 // fp16 bits when the KV type is f16
	VBits   []uint16
	Slots   int
}

// NewInputs draws fresh inputs (never zeros: normal values).
func NewInputs(rng *rand.Rand, t *treeattn.Tree, s treeattn.Shape, kv treeattn.KVType) *Inputs {
	slots := t.NumSlots()
	in := &Inputs{Slots: slots}
	in.Q = normal(rng, len(t.Queries)*s.QHeads*s.HeadDim)
	in.K = normal(rng, slots*s.KVHeads*s.HeadDim)
	in.V = normal(rng, slots*s.KVHeads*s.HeadDim)
	if kv == treeattn.KVF16 {
		in.KBits = half.FromFloat32Slice(in.K)
		in.VBits = half.FromFloat32Slice(in.V)
		in.K = half.ToFloat32Slice(in.KBits)
		in.V = half.ToFloat32Slice(in.VBits)
	}
	return in
}

func normal(rng *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(rng.NormFloat64())
	}
	return out
}

// Upload puts K and V on the device in the KV type's layout.
func (in *Inputs) Upload(d *vk.Device, kv treeattn.KVType) (k, v *vk.Buffer, err error) {
	if k, err = treeattn.UploadKV(d, kv, in.K, in.KBits); err != nil {
		return nil, nil, err
	}
	if v, err = treeattn.UploadKV(d, kv, in.V, in.VBits); err != nil {
		k.Close()
		return nil, nil, err
	}
	return k, v, nil
}

// Run executes one case on d.
func Run(d *vk.Device, rng *rand.Rand, c Case) Result {
	start := time.Now()
	res := Result{Case: c.Name, Method: c.Method, KV: c.KV.String(), HeadDim: c.Shape.HeadDim,
		GQA: c.Shape.GroupSize(), Queries: len(c.Tree.Queries), Tokens: c.Tree.TotalTokens(), Tolerance: Tolerance(c.KV)}
	err := run(d, rng, c, &res)
	if err != nil {
		res.Error = err.Error()
	}
	res.Pass = err == nil && res.Identical && res.RelL2 <= res.Tolerance
	res.Elapsed = time.Since(start)
	return res
}

func run(d *vk.Device, rng *rand.Rand, c Case, res *Result) error {
	plan, err := treeattn.NewPlan(c.Tree, treeattn.Config{Method: c.Method, Shape: c.Shape, KV: c.KV,
		Limits: treeattn.LimitsOf(d.Info), BlockTokens: c.Block, KernelVariant: c.Variant, Reduce: c.Reduce})
	if err != nil {
		return err
	}
	res.Variant = plan.Variant
	in := NewInputs(rng, c.Tree, c.Shape, c.KV)
	want, err := treeattn.Reference(c.Tree, c.Shape, in.Q, in.K, in.V, plan.Scale)
	if err != nil {
		return err
	}
	dp, err := plan.Upload(d)
	if err != nil {
		return err
	}
	defer dp.Close()
	res.Reduce = "separate"
	if dp.Fused() {
		res.Reduce = "fused"
	}
	q, err := d.NewBuffer(plan.QueryBytes())
	if err != nil {
		return err
	}
	defer q.Close()
	if err := q.WriteF32(0, in.Q); err != nil {
		return err
	}
	k, v, err := in.Upload(d, c.KV)
	if err != nil {
		return err
	}
	defer k.Close()
	defer v.Close()
	out, err := d.NewBuffer(plan.QueryBytes())
	if err != nil {
		return err
	}
	defer out.Close()
	rec, err := d.NewRecorder()
	if err != nil {
		return err
	}
	defer rec.Close()
	if err := dp.Run(rec, q, k, v, out); err != nil {
		return err
	}
	var runs [2][]float32
	for i := range runs {
		// Poison the output so elements the kernels fail to write show up as NaN.
		if err := out.FillF32(0, uint64(len(want)), float32(math.NaN())); err != nil {
			return err
		}
		if err := rec.Submit(); err != nil {
			return err
		}
		runs[i] = make([]float32, len(want))
		if err := out.ReadF32(0, runs[i]); err != nil {
			return err
		}
	}
	res.RelL2 = treeattn.RelativeL2(runs[0], want)
	res.Identical = bitsEqual(runs[0], runs[1])
	if !res.Identical {
		return fmt.Errorf("two runs differ")
	}
	if !(res.RelL2 <= res.Tolerance) {
		return fmt.Errorf("relative L2 error %.3g above %.3g", res.RelL2, res.Tolerance)
	}
	return nil
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/internal/npy"
	"github.com/deft-vk/deft/treeattn"
)

// attentionInputs are the checked contents of `deft attention`'s files.
type attentionInputs struct {
	tree  *treeattn.Tree
	shape treeattn.Shape
	kv    treeattn.KVType
	q     []float32
	k, v  *npy.Array
	slots int
	scale float64
}

func readNpy(path, what string) (*npy.Array, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	defer f.Close()
	a, err := npy.Read(f)
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	return a, nil
}

// loadAttention reads and cross-checks every input before any GPU work.
func loadAttention(treePath, qPath, kPath, vPath string, scale float64) (*attentionInputs, error) {
	raw, err := os.ReadFile(treePath)
	if err != nil {
		return nil, fmt.Errorf("read tree: %w", err)
	}
	tree, err := treeattn.ParseTreeJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", treePath, err)
	}
	q, err := readNpy(qPath, "Q")
	if err != nil {
		return nil, err
	}
	k, err := readNpy(kPath, "K")
	if err != nil {
		return nil, err
	}
	v, err := readNpy(vPath, "V")
	if err != nil {
		return nil, err
	}
	if len(q.Shape) != 3 || len(k.Shape) != 3 || len(v.Shape) != 3 {
		return nil, fmt.Errorf("shapes: Q %v must be [query, q_head, dim], K %v and V %v [slot, kv_head, dim]", q.Shape, k.Shape, v.Shape)
	}
	if fmt.Sprint(k.Shape) != fmt.Sprint(v.Shape) || k.DType != v.DType {
		return nil, fmt.Errorf("shapes: K is %s %v but V is %s %v", k.DType, k.Shape, v.DType, v.Shape)
	}
	if q.Shape[2] != k.Shape[2] {
		return nil, fmt.Errorf("shapes: Q head dim %d differs from K's %d", q.Shape[2], k.Shape[2])
	}
	if q.Shape[0] != len(tree.Queries) {
		return nil, fmt.Errorf("shapes: Q has %d queries, the tree %d", q.Shape[0], len(tree.Queries))
	}
	shape := treeattn.Shape{QHeads: q.Shape[1], KVHeads: k.Shape[1], HeadDim: q.Shape[2]}
	if err := shape.Validate(); err != nil {
		return nil, fmt.Errorf("shapes: %w", err)
	}
	if k.Shape[0] < tree.NumSlots() {
		return nil, fmt.Errorf("shapes: the tree uses slot %d but K/V hold %d slots", tree.NumSlots()-1, k.Shape[0])
	}
	if scale == 0 {
		scale = shape.DefaultScale()
	}
	if math.IsNaN(scale) || math.IsInf(scale, 0) || scale <= 0 || scale > math.MaxFloat32 {
		return nil, fmt.Errorf("scale %v must be positive and within float32 range", scale)
	}
	for name, a := range map[string]*npy.Array{"Q": q, "K": k, "V": v} {
		for i, x := range a.F32 {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return nil, fmt.Errorf("%s element %d is %v: inputs must be finite", name, i, x)
			}
		}
	}
	kv := treeattn.KVF32
	if k.DType == npy.Float16 {
		kv = treeattn.KVF16
	}
	return &attentionInputs{tree: tree, shape: shape, kv: kv, q: q.F32, k: k, v: v, slots: k.Shape[0], scale: scale}, nil
}

// outputFile is `deft attention`'s output, made before any GPU work so that
// a bad --out fails at once: a temporary file beside the target, renamed
// over it once the output is complete (never a partial or stale file).
type outputFile struct {
	path string
	tmp  *os.File
}

func createOutput(path string) (*outputFile, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("--out %s: is a directory", path)
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("--out %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("--out %s: %w", path, err)
	}
	return &outputFile{path: path, tmp: tmp}, nil
}

// commit writes the output and moves it into place.
func (o *outputFile) commit(shape []int, data []float32) error {
	if err := npy.Write(o.tmp, shape, data); err != nil {
		return fmt.Errorf("write output %s: %w", o.path, err)
	}
	if err := o.tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write output %s: %w", o.path, err)
	}
	if err := o.tmp.Close(); err != nil {
		return fmt.Errorf("write output %s: %w", o.path, err)
	}
	if err := os.Rename(o.tmp.Name(), o.path); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	o.tmp = nil
	return nil
}

// discard removes the temporary file unless commit moved it into place.
func (o *outputFile) discard() {
	if o.tmp != nil {
		o.tmp.Close()
		os.Remove(o.tmp.Name())
	}
}

// checkFinite fails on the first non-finite output value: the kernels turn
// rows they cannot compute (scores beyond fp32 even in the largest unit)
// into NaN rather than into plausible numbers.
func checkFinite(out []float32, s treeattn.Shape) error {
	bad, first := 0, -1
	for i, x := range out {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			if first < 0 {
				first = i
			}
			bad++
		}
	}
	if bad == 0 {
		return nil
	}
	row := first / s.HeadDim
	return fmt.Errorf("attention output: %d values are not finite, the first at query %d head %d: the scores overflow fp32", bad, row/s.QHeads, row%s.QHeads)
}

func attentionCommand() *cli.Command {
	return &cli.Command{
		Name:  "attention",
		Usage: "compute one tree attention from files (tree JSON and NumPy .npy inputs)",
		Description: "Q is [query][q_head][dim] (float32 or float16), K and V the KV pool [slot][kv_head][dim]\n" +
			"(float16 or float32; their type is the kernel's KV type). The output is float32 [query][q_head][dim].\n" +
			"The tree format is described in the README. With --check the command fails (after writing the output)\n" +
			"when the relative L2 error against the float64 reference exceeds --tol.",
		Flags: []cli.Flag{deviceFlag, validationFlag, variantFlag,
			&cli.StringFlag{Name: "tree", Required: true, Usage: "tree JSON (required)"},
			&cli.StringFlag{Name: "q", Required: true, Usage: "queries .npy (required)"},
			&cli.StringFlag{Name: "k", Required: true, Usage: "keys .npy (required)"},
			&cli.StringFlag{Name: "v", Required: true, Usage: "values .npy (required)"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "output .npy (required)"},
			&cli.StringFlag{Name: "method", Value: string(treeattn.MethodFlatten), Usage: fmt.Sprintf("one of %v", treeattn.Methods)},
			&cli.Float64Flag{Name: "scale", Usage: "softmax scale", DefaultText: "1/sqrt(dim)"},
			&cli.BoolFlag{Name: "check", Usage: "also compute the float64 CPU reference, print the relative L2 error and fail when it exceeds --tol"},
			&cli.Float64Flag{Name: "tol", Usage: "--check's bound on the relative L2 error",
				DefaultText: fmt.Sprintf("%g with f32 K/V, %g with f16, as deft conformance", conformance.TolF32, conformance.TolF16)},
		},
		Action: func(c *cli.Context) (err error) {
			method, err := treeattn.ParseMethod(c.String("method"))
			if err != nil {
				return err
			}
			if c.IsSet("tol") {
				if tol := c.Float64("tol"); !(tol > 0) || math.IsInf(tol, 0) {
					return fmt.Errorf("--tol %v: want a positive finite number", tol)
				}
				if !c.Bool("check") {
					return fmt.Errorf("--tol bounds --check's error: add --check")
				}
			}
			out, err := createOutput(c.String("out"))
			if err != nil {
				return err
			}
			defer out.discard()
			in, err := loadAttention(c.String("tree"), c.String("q"), c.String("k"), c.String("v"), c.Float64("scale"))
			if err != nil {
				return err
			}
			d, closeDevice, err := openDevice(c)
			if err != nil {
				return err
			}
			defer closeDevice(&err)
			plan, err := treeattn.NewPlan(in.tree, treeattn.Config{Method: method, Shape: in.shape, KV: in.kv, Scale: in.scale, Limits: treeattn.LimitsOf(d.Info)})
			if err != nil {
				return err
			}
			res, err := runAttention(d, plan, in)
			if err != nil {
				return err
			}
			if err := checkFinite(res, in.shape); err != nil {
				return err
			}
			if err := out.commit([]int{len(in.tree.Queries), in.shape.QHeads, in.shape.HeadDim}, res); err != nil {
				return err
			}
			if c.Bool("check") {
				want, err := treeattn.Reference(in.tree, in.shape, in.q, in.k.F32, in.v.F32, in.scale)
				if err != nil {
					return err
				}
				tol := conformance.Tolerance(in.kv)
				if c.IsSet("tol") {
					tol = c.Float64("tol")
				}
				rel := treeattn.RelativeL2(res, want)
				fmt.Fprintf(c.App.Writer, "relative L2 error against the float64 reference: %.3g (tolerance %.3g)\n", rel, tol)
				if !(rel <= tol) {
					return fmt.Errorf("check: relative L2 error %.3g exceeds the tolerance %.3g (--tol)", rel, tol)
				}
			}
			return nil
		},
	}
}

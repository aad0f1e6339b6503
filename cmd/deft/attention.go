package main

import (
	"fmt"
	"math"
	"os"

	"github.com/urfave/cli/v2"

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

func attentionCommand() *cli.Command {
	return &cli.Command{
		Name:  "attention",
		Usage: "compute one tree attention from files (tree JSON and NumPy .npy inputs)",
		Description: "Q is [query][q_head][dim] (float32 or float16), K and V the KV pool [slot][kv_head][dim]\n" +
			"(float16 or float32; their type is the kernel's KV type). The output is float32 [query][q_head][dim].\n" +
			"The tree format is described in the README.",
		Flags: []cli.Flag{deviceFlag, validationFlag, variantFlag,
			&cli.StringFlag{Name: "tree", Required: true, Usage: "tree JSON"},
			&cli.StringFlag{Name: "q", Required: true, Usage: "queries .npy"},
			&cli.StringFlag{Name: "k", Required: true, Usage: "keys .npy"},
			&cli.StringFlag{Name: "v", Required: true, Usage: "values .npy"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "output .npy"},
			&cli.StringFlag{Name: "method", Value: string(treeattn.MethodFlatten), Usage: fmt.Sprintf("one of %v", treeattn.Methods)},
			&cli.Float64Flag{Name: "scale", Usage: "softmax scale (default 1/sqrt(dim))"},
			&cli.BoolFlag{Name: "check", Usage: "also compute the float64 CPU reference and print the relative L2 error"},
		},
		Action: func(c *cli.Context) (err error) {
			method, err := treeattn.ParseMethod(c.String("method"))
			if err != nil {
				return err
			}
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
			out, err := runAttention(d, plan, in)
			if err != nil {
				return err
			}
			f, err := os.Create(c.String("out"))
			if err != nil {
				return fmt.Errorf("write output: %w", err)
			}
			if err := npy.Write(f, []int{len(in.tree.Queries), in.shape.QHeads, in.shape.HeadDim}, out); err != nil {
				f.Close()
				return fmt.Errorf("write output %s: %w", c.String("out"), err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
			if c.Bool("check") {
				want, err := treeattn.Reference(in.tree, in.shape, in.q, in.k.F32, in.v.F32, in.scale)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "relative L2 error against the float64 reference: %.3g\n", treeattn.RelativeL2(out, want))
			}
			return nil
		},
	}
}

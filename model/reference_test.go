package model

import (
	"fmt"
	"math"
	"testing"

	"github.com/deft-vk/deft/gguf"
	"github.com/stretchr/testify/require"
)

// refModel is a float64 CPU Llama forward pass for tests (weights decoded
// from their GGUF encoding exactly), one token at a time with a KV cache.
type refModel struct {
	c         Config
	embd, out [][]float64
	outNorm   []float64
	layers    []refLayer
}

type refLayer struct {
	attnNorm, ffnNorm          []float64
	q, k, v, o, gate, up, down [][]float64
}

func newRef(t *testing.T, f *gguf.File) *refModel {
	t.Helper()
	c, err := ConfigFrom(f)
	require.NoError(t, err)
	mat := func(name string) [][]float64 {
		w, err := f.Tensor(name)
		require.NoError(t, err)
		return decodeTensor(t, w)
	}
	r := &refModel{c: c, embd: mat("token_embd.weight"), outNorm: vecOf(t, f, "output_norm.weight")}
	r.out = r.embd
	if !c.TiedOutput {
		r.out = mat("output.weight")
	}
	for i := range c.Layers {
		p := fmt.Sprintf("blk.%d.", i)
		r.layers = append(r.layers, refLayer{
			attnNorm: vecOf(t, f, p+"attn_norm.weight"), ffnNorm: vecOf(t, f, p+"ffn_norm.weight"),
			q: mat(p + "attn_q.weight"), k: mat(p + "attn_k.weight"), v: mat(p + "attn_v.weight"),
			o: mat(p + "attn_output.weight"), gate: mat(p + "ffn_gate.weight"), up: mat(p + "ffn_up.weight"),
			down: mat(p + "ffn_down.weight"),
		})
	}
	return r
}

// vecOf decodes a 1-D tensor.
func vecOf(t *testing.T, f *gguf.File, name string) []float64 {
	w, err := f.Tensor(name)
	require.NoError(t, err)
	v, err := decodeFloats(w.Type, w.Data, int(w.Elements()))
	require.NoError(t, err)
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// refSeq is one sequence's KV cache: [layer][position][kv_head*head_dim].
type refSeq struct {
	m    *refModel
	k, v [][][]float64
}

func (r *refModel) newSeq() *refSeq {
	return &refSeq{m: r, k: make([][][]float64, r.c.Layers), v: make([][][]float64, r.c.Layers)}
}

// fork copies the cache (branches share their prefix by value).
func (s *refSeq) fork() *refSeq {
	n := &refSeq{m: s.m, k: make([][][]float64, len(s.k)), v: make([][][]float64, len(s.v))}
	for l := range s.k {
		n.k[l] = append([][]float64(nil), s.k[l]...)
		n.v[l] = append([][]float64(nil), s.v[l]...)
	}
	return n
}

func matvec(w [][]float64, x []float64) []float64 {
	out := make([]float64, len(w))
	for o, row := range w {
		s := 0.0
		for j, v := range row {
			s += v * x[j]
		}
		out[o] = s
	}
	return out
}

func rmsnormRef(x, w []float64, eps float64) []float64 {
	ss := 0.0
	for _, v := range x {
		ss += v * v
	}
	s := 1 / math.Sqrt(ss/float64(len(x))+eps)
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = v * s * w[i]
	}
	return out
}

// eval appends token at the next position and returns its logits.
func (s *refSeq) eval(token int32) []float64 {
	c := s.m.c
	pos := len(s.k[0])
	inv := c.InvFreqs()
	h := append([]float64(nil), s.m.embd[token]...)
	rot := func(x []float64, heads int) {
		for hd := range heads {
			b := hd * c.HeadDim
			for i := 0; i < c.RopeDims/2; i++ {
				th := float64(pos) * inv[i]
				cs, sn := math.Cos(th), math.Sin(th)
				a, bb := x[b+2*i], x[b+2*i+1]
				x[b+2*i], x[b+2*i+1] = a*cs-bb*sn, a*sn+bb*cs
			}
		}
	}
	g := c.Heads / c.KVHeads
	for li, l := range s.m.layers {
		xn := rmsnormRef(h, l.attnNorm, c.RMSEps)
		q, k, v := matvec(l.q, xn), matvec(l.k, xn), matvec(l.v, xn)
		rot(q, c.Heads)
		rot(k, c.KVHeads)
		s.k[li] = append(s.k[li], k)
		s.v[li] = append(s.v[li], v)
		att := make([]float64, c.Heads*c.HeadDim)
		scale := 1 / math.Sqrt(float64(c.HeadDim))
		for hd := range c.Heads {
			kh := hd / g
			qh := q[hd*c.HeadDim : (hd+1)*c.HeadDim]
			sc := make([]float64, pos+1)
			mx := math.Inf(-1)
			for p := range sc {
				kk := s.k[li][p][kh*c.HeadDim:]
				d := 0.0
				for j := range qh {
					d += qh[j] * kk[j]
				}
				sc[p] = d * scale
				mx = math.Max(mx, sc[p])
			}
			sum := 0.0
			for p := range sc {
				sc[p] = math.Exp(sc[p] - mx)
				sum += sc[p]
			}
			for p := range sc {
				vv := s.v[li][p][kh*c.HeadDim:]
				for j := range c.HeadDim {
					att[hd*c.HeadDim+j] += sc[p] / sum * vv[j]
				}
			}
		}
		for i, v := range matvec(l.o, att) {
			h[i] += v
		}
		xn = rmsnormRef(h, l.ffnNorm, c.RMSEps)
		gt, up := matvec(l.gate, xn), matvec(l.up, xn)
		for i := range gt {
			gt[i] = gt[i] / (1 + math.Exp(-gt[i])) * up[i]
		}
		for i, v := range matvec(l.down, gt) {
			h[i] += v
		}
	}
	return matvec(s.m.out, rmsnormRef(h, s.m.outNorm, c.RMSEps))
}

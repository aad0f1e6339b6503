// Package reference is a float64 CPU forward pass of a llama GGUF model, one
// token at a time: slow and simple, the yardstick that faster forward passes
// are tested against. Weights are dequantized once with gguf's reference
// dequantizers and widened to float64 exactly.
package reference

import (
	"fmt"
	"math"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/llama"
)

// Model holds the weights in float64. GGUF matrices keep their layout: a
// weight of dims [in, out] is out rows of in elements, so y[o] = sum_i
// W[o*in+i]*x[i].
type Model struct {
	cfg       llama.Config
	embd      []float64 // Vocab rows of Embd
	layers    []layer
	outNorm   []float64
	out       []float64 // Vocab rows of Embd; the same slice as embd when tied
	ropeTheta []float64 // per rotated pair i: base^(-2i/RopeDims) / RopeFreqs[i]
}

type layer struct {
	attnNorm, q, k, v, o, ffnNorm, gate, up, down []float64
}

// New dequantizes the weights of f, described by cfg (from llama.ConfigFrom).
func New(cfg llama.Config, f *gguf.File) (*Model, error) {
	w, err := llama.WeightsOf(cfg, f)
	if err != nil {
		return nil, err
	}
	var firstErr error
	load := func(t gguf.Tensor) []float64 {
		v, err := gguf.Dequantize(t)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("reference: %w", err)
		}
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	m := &Model{cfg: cfg, embd: load(w.TokenEmbd), outNorm: load(w.OutputNorm)}
	if cfg.TiedOutput {
		m.out = m.embd
	} else {
		m.out = load(w.Output)
	}
	for _, l := range w.Layers {
		m.layers = append(m.layers, layer{
			attnNorm: load(l.AttnNorm), q: load(l.Q), k: load(l.K), v: load(l.V), o: load(l.O),
			ffnNorm: load(l.FFNNorm), gate: load(l.Gate), up: load(l.Up), down: load(l.Down),
		})
	}
	if firstErr != nil {
		return nil, firstErr
	}
	m.ropeTheta = ropeThetas(cfg)
	return m, nil
}

// ropeThetas returns the rotation frequency of each pair of rotated dims:
// base^(-2i/RopeDims), divided by RopeFreqs[i] when the model has them.
func ropeThetas(cfg llama.Config) []float64 {
	th := make([]float64, cfg.RopeDims/2)
	for i := range th {
		th[i] = math.Pow(cfg.RopeBase, -2*float64(i)/float64(cfg.RopeDims))
		if cfg.RopeFreqs != nil {
			th[i] /= cfg.RopeFreqs[i]
		}
	}
	return th
}

// Config returns the model's configuration.
func (m *Model) Config() llama.Config { return m.cfg }

// Sequence is one sequence being decoded: its KV cache, one entry per
// position.
type Sequence struct {
	m    *Model
	k, v [][]float64 // per layer: positions × (KVHeads*HeadDim), appended
	n    int
}

// NewSequence returns an empty sequence.
func (m *Model) NewSequence() *Sequence {
	return &Sequence{m: m, k: make([][]float64, len(m.layers)), v: make([][]float64, len(m.layers))}
}

// Len returns the number of tokens evaluated so far.
func (s *Sequence) Len() int { return s.n }

// Clone returns an independent copy, for evaluating another branch from the
// same prefix.
func (s *Sequence) Clone() *Sequence {
	c := s.m.NewSequence()
	c.n = s.n
	for i := range s.k {
		c.k[i] = append([]float64(nil), s.k[i]...)
		c.v[i] = append([]float64(nil), s.v[i]...)
	}
	return c
}

// Eval appends token at position Len() and returns the logits of the next
// token.
func (s *Sequence) Eval(token int32) ([]float64, error) {
	m, c := s.m, s.m.cfg
	if token < 0 || int(token) >= c.Vocab {
		return nil, fmt.Errorf("reference: token %d outside the vocabulary of %d", token, c.Vocab)
	}
	pos := s.n
	x := append([]float64(nil), m.embd[int(token)*c.Embd:(int(token)+1)*c.Embd]...)
	h := make([]float64, c.Embd)
	kvDim, kvDimV := c.KVHeads*c.HeadDim, c.KVHeads*c.HeadDimV
	group := c.Heads / c.KVHeads
	scale := 1 / math.Sqrt(float64(c.HeadDim))
	for li, l := range m.layers {
		rmsNorm(h, x, l.attnNorm, c.RMSEps)
		q := matVec(l.q, h, c.Heads*c.HeadDim)
		k := matVec(l.k, h, kvDim)
		v := matVec(l.v, h, kvDimV)
		for hd := range c.Heads {
			m.rope(q[hd*c.HeadDim:(hd+1)*c.HeadDim], pos)
		}
		for hd := range c.KVHeads {
			m.rope(k[hd*c.HeadDim:(hd+1)*c.HeadDim], pos)
		}
		s.k[li] = append(s.k[li], k...)
		s.v[li] = append(s.v[li], v...)

		att := make([]float64, c.Heads*c.HeadDimV)
		scores := make([]float64, pos+1)
		for hd := range c.Heads {
			kh := hd / group // grouped-query attention: heads share KV heads
			qh := q[hd*c.HeadDim : (hd+1)*c.HeadDim]
			for t := range pos + 1 {
				kt := s.k[li][t*kvDim+kh*c.HeadDim : t*kvDim+(kh+1)*c.HeadDim]
				scores[t] = dot(qh, kt) * scale
			}
			softmax(scores)
			out := att[hd*c.HeadDimV : (hd+1)*c.HeadDimV]
			for t, p := range scores {
				vt := s.v[li][t*kvDimV+kh*c.HeadDimV : t*kvDimV+(kh+1)*c.HeadDimV]
				for d := range out {
					out[d] += p * vt[d]
				}
			}
		}
		addTo(x, matVec(l.o, att, c.Embd))

		rmsNorm(h, x, l.ffnNorm, c.RMSEps)
		gate := matVec(l.gate, h, c.FFN)
		up := matVec(l.up, h, c.FFN)
		for i, g := range gate {
			gate[i] = g / (1 + math.Exp(-g)) * up[i] // SwiGLU: silu(gate) * up
		}
		addTo(x, matVec(l.down, gate, c.Embd))
	}
	rmsNorm(h, x, m.outNorm, c.RMSEps)
	s.n++
	return matVec(m.out, h, c.Vocab), nil
}

// rope rotates the adjacent pairs (2i, 2i+1) of the first RopeDims elements
// of one head by pos*theta_i: llama.cpp's "normal" mode, which GGUF llama
// models use (the converter permuted Q and K rows to match).
func (m *Model) rope(v []float64, pos int) {
	for i, th := range m.ropeTheta {
		sin, cos := math.Sincos(float64(pos) * th)
		x0, x1 := v[2*i], v[2*i+1]
		v[2*i] = x0*cos - x1*sin
		v[2*i+1] = x0*sin + x1*cos
	}
}

// rmsNorm sets dst = x / sqrt(mean(x²) + eps) * w.
func rmsNorm(dst, x, w []float64, eps float64) {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	for i, v := range x {
		dst[i] = v * r * w[i]
	}
}

// matVec returns W x for a GGUF weight of rows out, each len(x) long.
func matVec(w, x []float64, rows int) []float64 {
	y := make([]float64, rows)
	n := len(x)
	for o := range y {
		y[o] = dot(w[o*n:(o+1)*n], x)
	}
	return y
}

func dot(a, b []float64) float64 {
	var s float64
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

func addTo(x, d []float64) {
	for i := range x {
		x[i] += d[i]
	}
}

func softmax(v []float64) {
	mx := math.Inf(-1)
	for _, x := range v {
		mx = max(mx, x)
	}
	var sum float64
	for i, x := range v {
		v[i] = math.Exp(x - mx)
		sum += v[i]
	}
	for i := range v {
		v[i] /= sum
	}
}

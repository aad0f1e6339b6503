package model

import (
	"math"

	"github.com/deft-vk/deft/llama"
)

// Config is a Llama model's hyper-parameters (package llama reads them).
type Config = llama.Config

// invFreqs returns RoPE's inverse frequency of each rotated pair,
// base^(-2i/RopeDims) / RopeFreqs[i], in float64.
func invFreqs(c Config) []float64 {
	out := make([]float64, c.RopeDims/2)
	for i := range out {
		out[i] = math.Pow(c.RopeBase, -2*float64(i)/float64(c.RopeDims))
		if c.RopeFreqs != nil {
			out[i] /= c.RopeFreqs[i]
		}
	}
	return out
}

// maxDim bounds a weight row so index arithmetic in uint32 cannot overflow.
const maxDim = 1 << 20

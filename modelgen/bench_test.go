package modelgen_test

import (
	"testing"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/modelgen"
)

// BenchmarkFill measures the host generator per type (bytes/s of encoded
// tensor on one core).
func BenchmarkFill(b *testing.B) {
	for _, typ := range []gguf.TensorType{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K} {
		b.Run(typ.String(), func(b *testing.B) {
			dims := []uint64{4096, 64}
			p := modelgen.TensorParams(1, "w", typ, dims)
			rb, _ := typ.RowBytes(dims[0])
			buf := make([]byte, rb*dims[1])
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				if err := modelgen.Fill(buf, typ, p, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

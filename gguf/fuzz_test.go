package gguf

import (
	"bytes"
	"testing"
)

// fuzzSeed is a small valid file: a few values, nested arrays, and one tiny
// tensor of each supported type.
func fuzzSeed(t testing.TB) []byte {
	w := NewWriter()
	for _, kv := range []KV{
		{"general.architecture", "llama"},
		{"llama.block_count", uint32(1)},
		{"general.alignment", uint32(8)},
		{"tokenizer.ggml.tokens", []string{"<s>", " a", ""}},
		{"n", []any{[]int8{1}, []any{}}},
		{"f", 1.5},
	} {
		if err := w.SetKV(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	for _, typ := range SupportedTypes {
		n := max(typ.BlockSize(), 2)
		data, err := Quantize(typ, make([]float32, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddTensor("t."+typ.String(), typ, []uint64{uint64(n)}, data); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzOpen feeds arbitrary bytes to FromBytes: errors are fine; panics,
// hangs and tensors outside the input are not.
func FuzzOpen(f *testing.F) {
	seed := fuzzSeed(f)
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add(seed[:200])
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := FromBytes("fuzz", data)
		if err != nil {
			if g != nil {
				t.Fatal("file and error both returned")
			}
			return
		}
		defer g.Close()
		_ = g.Architecture()
		for _, kv := range g.Metadata() {
			if _, _, err := TypeOf(kv.Value); err != nil {
				t.Fatalf("key %q: %v", kv.Key, err)
			}
			_, _ = g.Uint(kv.Key)
			_, _ = g.Floats(kv.Key)
			_, _ = g.Strings(kv.Key)
		}
		for _, tn := range g.Tensors() {
			size, err := tensorBytes(tn.Type, tn.Dims)
			if err != nil || uint64(len(tn.Data)) != size {
				t.Fatalf("tensor %q: %d bytes for %s %v (%v)", tn.Name, len(tn.Data), tn.Type, tn.Dims, err)
			}
			if len(tn.Data) > 0 && !inside(tn.Data, data) {
				t.Fatalf("tensor %q: data outside the input", tn.Name)
			}
			if tn.Type.Supported() {
				if _, err := Dequantize(tn); err != nil {
					t.Fatalf("tensor %q: %v", tn.Name, err)
				}
			}
		}
	})
}

// inside reports whether sub lies within buf's memory.
func inside(sub, buf []byte) bool {
	for i := range buf {
		if &buf[i] == &sub[0] {
			return len(buf)-i >= len(sub)
		}
	}
	return false
}

package modelgen

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/llama"
)

// Model is a random model to write.
type Model struct {
	Name       string // general.name
	Config     llama.Config
	TensorType func(name string) gguf.TensorType
	Seed       uint64
	Vocab      Vocabulary // its size must be Config.Vocab
	// FileType is general.file_type (llama.cpp's llama_ftype); 0 leaves it out.
	FileType uint32
}

// FileTypes are llama.cpp's general.file_type numbers of TypeNames.
var FileTypes = map[string]uint32{"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17, "bf16": 32}

// chunkBytes is the size of one generated piece of a tensor.
const chunkBytes = 4 << 20

// Write writes m as a GGUF file to out, generating each tensor in pieces on
// all CPU cores while it is written, so memory stays bounded (a few MiB per
// core) whatever the model's size. progress, when set, is called after
// each piece with the tensor bytes written and their total.
func Write(out io.Writer, m Model, progress func(done, total uint64)) (int64, error) {
	c := m.Config
	if m.TensorType == nil {
		return 0, errors.New("modelgen: write: no tensor types")
	}
	if m.Vocab.Size != c.Vocab {
		return 0, fmt.Errorf("modelgen: write: the vocabulary has %d tokens, the config %d", m.Vocab.Size, c.Vocab)
	}
	if c.Blocks <= 0 || c.Embd <= 0 || c.FFN <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.HeadDim <= 0 || c.Heads%c.KVHeads != 0 {
		return 0, fmt.Errorf("modelgen: write: invalid config %+v", c)
	}
	if c.HeadDimV == 0 {
		c.HeadDimV = c.HeadDim
	}
	w := gguf.NewWriter()
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "general.name", Value: m.Name},
	}
	if m.FileType != 0 {
		kvs = append(kvs, gguf.KV{Key: "general.file_type", Value: m.FileType})
	}
	kvs = append(kvs,
		gguf.KV{Key: "llama.context_length", Value: uint32(c.ContextLen)},
		gguf.KV{Key: "llama.embedding_length", Value: uint32(c.Embd)},
		gguf.KV{Key: "llama.block_count", Value: uint32(c.Blocks)},
		gguf.KV{Key: "llama.feed_forward_length", Value: uint32(c.FFN)},
		gguf.KV{Key: "llama.rope.dimension_count", Value: uint32(c.RopeDims)},
		gguf.KV{Key: "llama.attention.head_count", Value: uint32(c.Heads)},
		gguf.KV{Key: "llama.attention.head_count_kv", Value: uint32(c.KVHeads)},
		gguf.KV{Key: "llama.attention.layer_norm_rms_epsilon", Value: float32(c.RMSEps)},
		gguf.KV{Key: "llama.rope.freq_base", Value: float32(c.RopeBase)},
		gguf.KV{Key: "llama.vocab_size", Value: uint32(c.Vocab)},
	)
	if c.HeadDim*c.Heads != c.Embd {
		kvs = append(kvs, gguf.KV{Key: "llama.attention.key_length", Value: uint32(c.HeadDim)},
			gguf.KV{Key: "llama.attention.value_length", Value: uint32(c.HeadDimV)})
	}
	kvs = append(kvs, m.Vocab.KVs...)
	for _, kv := range kvs {
		if err := w.SetKV(kv.Key, kv.Value); err != nil {
			return 0, fmt.Errorf("modelgen: write: %w", err)
		}
	}
	var total uint64
	var done atomic.Uint64
	type pending struct {
		t   Tensor
		typ gguf.TensorType
	}
	var ts []pending
	for _, t := range Tensors(c) {
		typ := m.TensorType(t.Name)
		switch typ {
		case gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K:
		default:
			return 0, fmt.Errorf("modelgen: write: %s: tensor type %s is not generated", t.Name, typ)
		}
		size, err := typ.RowBytes(t.Dims[0])
		if err != nil {
			return 0, fmt.Errorf("modelgen: write: %s: %w", t.Name, err)
		}
		for _, d := range t.Dims[1:] {
			size *= d
		}
		total += size
		ts = append(ts, pending{t, typ})
	}
	for _, p := range ts {
		src := &tensorSource{typ: p.typ, params: TensorParams(m.Seed, p.t.Name, p.typ, p.t.Dims), dims: p.t.Dims,
			report: func(n uint64) {
				d := done.Add(n)
				if progress != nil {
					progress(d, total)
				}
			}}
		if err := w.AddTensorFrom(p.t.Name, p.typ, p.t.Dims, src); err != nil {
			return 0, fmt.Errorf("modelgen: write: %w", err)
		}
	}
	n, err := w.WriteTo(out)
	if err != nil {
		return n, fmt.Errorf("modelgen: %w", err)
	}
	return n, nil
}

// WriteFile writes m to path (created or truncated; a regular file is
// removed on failure) and returns the bytes written.
func WriteFile(path string, m Model, progress func(done, total uint64)) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, fmt.Errorf("modelgen: write: %w", err)
	}
	removeBad := func() {
		if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
			os.Remove(path)
		}
	}
	n, err := Write(f, m, progress)
	if err != nil {
		f.Close()
		removeBad()
		return n, fmt.Errorf("%w (writing %s)", err, path)
	}
	if err := f.Close(); err != nil {
		removeBad()
		return n, fmt.Errorf("modelgen: write %s: %w", path, err)
	}
	return n, nil
}

// tensorSource generates a tensor's bytes in chunks on every core, writing
// them in order: at most 2 chunks per core exist at once.
type tensorSource struct {
	typ    gguf.TensorType
	params Params
	dims   []uint64
	report func(n uint64)
}

func (s *tensorSource) WriteTo(w io.Writer) (int64, error) {
	size, err := s.typ.RowBytes(s.dims[0])
	if err != nil {
		return 0, err
	}
	for _, d := range s.dims[1:] {
		size *= d
	}
	bb := uint64(s.typ.BlockBytes())
	chunk := max(bb, chunkBytes/bb*bb)
	nChunks := int((size + chunk - 1) / chunk)
	workers := runtime.GOMAXPROCS(0)
	slots := 2 * workers
	free := make(chan []byte, slots)
	for range slots {
		free <- nil
	}
	results := make([]chan []byte, nChunks)
	for i := range results {
		results[i] = make(chan []byte, 1)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var genErr atomic.Pointer[error]
	wg.Add(1) // the producer, so that its own wg.Add calls precede Wait
	go func() {
		defer wg.Done()
		sem := make(chan struct{}, workers)
		for i := range nChunks {
			var buf []byte
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			off := uint64(i) * chunk
			n := min(chunk, size-off)
			if uint64(cap(buf)) < n {
				buf = make([]byte, chunk)
			}
			buf = buf[:n]
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := Fill(buf, s.typ, s.params, off); err != nil {
					genErr.CompareAndSwap(nil, &err)
				}
				results[i] <- buf
			}()
		}
	}()
	var written int64
	for i := range nChunks {
		buf := <-results[i]
		if e := genErr.Load(); e != nil {
			err = *e
			break
		}
		m, werr := w.Write(buf)
		written += int64(m)
		if werr != nil {
			err = werr
			break
		}
		s.report(uint64(m))
		free <- buf
	}
	close(stop)
	wg.Wait()
	return written, err
}

package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
)

// maxNameLen is the longest tensor name llama.cpp accepts (GGML_MAX_NAME
// less the terminating zero).
const maxNameLen = 63

// Writer builds a GGUF v3 file: metadata in the order set, then tensor
// descriptions and data in the order added, each tensor's data aligned to
// general.alignment (DefaultAlignment when unset). Tensor bytes are
// referenced, not copied, until WriteTo; a tensor added with AddTensorFrom
// is produced by its source only while WriteTo writes it, so files larger
// than memory can be written.
type Writer struct {
	kvs     []KV
	keys    map[string]int
	tensors []Tensor
	sizes   []uint64
	srcs    []io.WriterTo // nil for tensors with Data
	names   map[string]bool
}

// NewWriter returns an empty Writer.
func NewWriter() *Writer {
	return &Writer{keys: map[string]int{}, names: map[string]bool{}}
}

// SetKV sets a metadata value (see KV for the Go types allowed); setting a
// key again replaces its value in place.
func (w *Writer) SetKV(key string, value any) error {
	if _, _, err := TypeOf(value); err != nil {
		return fmt.Errorf("gguf: set %q: %w", key, err)
	}
	if key == "general.alignment" {
		a, ok := value.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("gguf: set %q: must be a uint32 power of two, not %s %v", key, describe(value), short(value))
		}
	}
	if i, ok := w.keys[key]; ok {
		w.kvs[i].Value = value
		return nil
	}
	w.keys[key] = len(w.kvs)
	w.kvs = append(w.kvs, KV{Key: key, Value: value})
	return nil
}

// AddTensor adds a tensor; dims are in GGUF order (ne0, the row length,
// first) and data must hold exactly its bytes. Any type with a known block
// layout is accepted, so files with types this package does not convert can
// still be copied.
func (w *Writer) AddTensor(name string, typ TensorType, dims []uint64, data []byte) error {
	size, err := w.checkTensor(name, typ, dims)
	if err != nil {
		return err
	}
	if uint64(len(data)) != size {
		return fmt.Errorf("gguf: add tensor %q: %s %v needs %d bytes, have %d", name, typ, dims, size, len(data))
	}
	w.add(Tensor{Name: name, Type: typ, Dims: slices.Clone(dims), Data: data}, size, nil)
	return nil
}

// AddTensorFrom adds a tensor whose bytes src writes when WriteTo reaches
// it; src must write exactly the tensor's size (an error otherwise).
func (w *Writer) AddTensorFrom(name string, typ TensorType, dims []uint64, src io.WriterTo) error {
	size, err := w.checkTensor(name, typ, dims)
	if err != nil {
		return err
	}
	if src == nil {
		return fmt.Errorf("gguf: add tensor %q: nil source", name)
	}
	w.add(Tensor{Name: name, Type: typ, Dims: slices.Clone(dims)}, size, src)
	return nil
}

func (w *Writer) add(t Tensor, size uint64, src io.WriterTo) {
	w.names[t.Name] = true
	w.tensors = append(w.tensors, t)
	w.sizes = append(w.sizes, size)
	w.srcs = append(w.srcs, src)
}

// checkTensor checks a new tensor's name and dims and returns its size.
func (w *Writer) checkTensor(name string, typ TensorType, dims []uint64) (uint64, error) {
	switch {
	case name == "" || len(name) > maxNameLen:
		return 0, fmt.Errorf("gguf: add tensor %q: name must have 1 to %d bytes", name, maxNameLen)
	case w.names[name]:
		return 0, fmt.Errorf("gguf: add tensor %q: added twice", name)
	case len(dims) == 0 || len(dims) > 4:
		return 0, fmt.Errorf("gguf: add tensor %q: %d dimensions, want 1 to 4", name, len(dims))
	}
	size, err := tensorBytes(typ, dims)
	if err != nil {
		return 0, fmt.Errorf("gguf: add tensor %q: %w", name, err)
	}
	return size, nil
}

func (w *Writer) alignment() uint64 {
	if i, ok := w.keys["general.alignment"]; ok {
		return uint64(w.kvs[i].Value.(uint32))
	}
	return DefaultAlignment
}

// WriteTo writes the file to out.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	e := &encoder{w: bufio.NewWriterSize(out, 1<<20)}
	e.raw([]byte("GGUF"))
	e.u32(3)
	e.u64(uint64(len(w.tensors)))
	e.u64(uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		e.str(kv.Key)
		e.value(kv.Value)
	}
	align := w.alignment()
	var off uint64
	for i, t := range w.tensors {
		e.str(t.Name)
		e.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			e.u64(d)
		}
		e.u32(uint32(t.Type))
		e.u64(off)
		off = alignUp(off+w.sizes[i], align)
	}
	e.pad(align)
	for i, t := range w.tensors {
		if w.srcs[i] == nil {
			e.raw(t.Data)
		} else if e.err == nil {
			start := e.n
			if _, err := w.srcs[i].WriteTo(encoderWriter{e}); err != nil && e.err == nil {
				e.err = fmt.Errorf("tensor %q: %w", t.Name, err)
			}
			if got := uint64(e.n - start); e.err == nil && got != w.sizes[i] {
				e.err = fmt.Errorf("tensor %q: its source wrote %d bytes, want %d", t.Name, got, w.sizes[i])
			}
		}
		e.pad(align)
	}
	if e.err == nil {
		e.err = e.w.Flush()
	}
	if e.err != nil {
		return e.n, fmt.Errorf("gguf: write: %w", e.err)
	}
	return e.n, nil
}

// WriteFile writes the file to path (created or truncated).
func (w *Writer) WriteFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("gguf: write: %w", err)
	}
	if _, err := w.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	return nil
}

// encoder writes little-endian GGUF fields, keeping the first error and the
// byte count.
type encoder struct {
	w   *bufio.Writer
	n   int64
	err error
	buf [8]byte
}

func (e *encoder) raw(b []byte) {
	if e.err != nil {
		return
	}
	var m int
	m, e.err = e.w.Write(b)
	e.n += int64(m)
}

// encoderWriter is an io.Writer onto an encoder, for tensor sources.
type encoderWriter struct{ e *encoder }

func (w encoderWriter) Write(b []byte) (int, error) {
	if w.e.err != nil {
		return 0, w.e.err
	}
	n0 := w.e.n
	w.e.raw(b)
	return int(w.e.n - n0), w.e.err
}

func (e *encoder) u8(v uint8) { e.raw([]byte{v}) }
func (e *encoder) u16(v uint16) {
	binary.LittleEndian.PutUint16(e.buf[:], v)
	e.raw(e.buf[:2])
}
func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.buf[:], v)
	e.raw(e.buf[:4])
}
func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:], v)
	e.raw(e.buf[:8])
}
func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	if e.err == nil {
		m, err := e.w.WriteString(s)
		e.n += int64(m)
		e.err = err
	}
}

func (e *encoder) pad(align uint64) {
	if r := uint64(e.n) % align; r != 0 {
		e.raw(make([]byte, align-r))
	}
}

// value writes the type tag of v and then v.
func (e *encoder) value(v any) {
	typ, _, _ := TypeOf(v) // checked by SetKV
	e.u32(uint32(typ))
	e.payload(v)
}

// payload writes v without its type tag.
func (e *encoder) payload(v any) {
	switch v := v.(type) {
	case uint8:
		e.u8(v)
	case int8:
		e.u8(uint8(v))
	case uint16:
		e.u16(v)
	case int16:
		e.u16(uint16(v))
	case uint32:
		e.u32(v)
	case int32:
		e.u32(uint32(v))
	case uint64:
		e.u64(v)
	case int64:
		e.u64(uint64(v))
	case float32:
		e.u32(math.Float32bits(v))
	case float64:
		e.u64(math.Float64bits(v))
	case bool:
		if v {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case string:
		e.str(v)
	case []uint8:
		array(e, TypeUint8, v)
	case []int8:
		array(e, TypeInt8, v)
	case []uint16:
		array(e, TypeUint16, v)
	case []int16:
		array(e, TypeInt16, v)
	case []uint32:
		array(e, TypeUint32, v)
	case []int32:
		array(e, TypeInt32, v)
	case []uint64:
		array(e, TypeUint64, v)
	case []int64:
		array(e, TypeInt64, v)
	case []float32:
		array(e, TypeFloat32, v)
	case []float64:
		array(e, TypeFloat64, v)
	case []bool:
		array(e, TypeBool, v)
	case []string:
		array(e, TypeString, v)
	case []any:
		// Each element is an array, written with its own element type.
		e.u32(uint32(TypeArray))
		e.u64(uint64(len(v)))
		for _, x := range v {
			e.payload(x)
		}
	}
}

func array[T any](e *encoder, elem ValueType, v []T) {
	e.u32(uint32(elem))
	e.u64(uint64(len(v)))
	for _, x := range v {
		e.payload(x)
	}
}

// Package gguf reads and writes GGUF model files: metadata, tensor
// descriptions and tensor bytes (memory-mapped, never copied), with CPU
// reference conversions between float32 and the tensor types the engine runs
// (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K).
//
// Headers are parsed by github.com/gpustack/gguf-parser-go. That parser
// trims white space from every string it reads, which would corrupt
// vocabulary entries such as "\u00a0" or ";\r"; the exact bytes of each
// string are therefore read back from the mapped header, checked against the
// parser's values, and used instead.
package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"

	parser "github.com/gpustack/gguf-parser-go"
)

// DefaultAlignment is the alignment of tensor data when a file does not set
// general.alignment.
const DefaultAlignment = 32

// Tensor is one tensor of a file. Dims are in GGUF order: Dims[0] (ne0) is
// the length of a row, the number of contiguous elements. Data holds the
// tensor's bytes inside the file's mapping (or the slice given to FromBytes):
// it is read-only and valid until the File is closed.
type Tensor struct {
	Name string
	Type TensorType
	Dims []uint64
	Data []byte
}

// Elements returns the number of elements, the product of Dims.
func (t Tensor) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d // cannot overflow: the byte size was checked on opening
	}
	return n
}

// Rows returns the number of rows, the product of Dims[1:].
func (t Tensor) Rows() uint64 {
	if len(t.Dims) == 0 {
		return 0
	}
	return t.Elements() / max(t.Dims[0], 1)
}

// File is an open GGUF file. It is read-only: any number of goroutines may
// read it at once, but none while it is being closed.
type File struct {
	name       string
	version    uint32
	alignment  uint64
	dataOffset uint64
	kvs        []KV
	keys       map[string]int
	tensors    []Tensor
	byName     map[string]int
	data       []byte
	release    func() error // unmaps; nil for FromBytes
}

// Name returns the path given to Open or the name given to FromBytes.
func (f *File) Name() string { return f.name }

// Version returns the GGUF version of the file (2 or 3).
func (f *File) Version() uint32 { return f.version }

// Alignment returns the alignment of tensor data in bytes.
func (f *File) Alignment() uint64 { return f.alignment }

// DataOffset returns the offset in the file where tensor data begins.
func (f *File) DataOffset() uint64 { return f.dataOffset }

// Size returns the size of the file in bytes.
func (f *File) Size() int { return len(f.data) }

// Tensors returns the tensors in file order.
func (f *File) Tensors() []Tensor { return slices.Clone(f.tensors) }

// Tensor returns the tensor called name, or an error naming it when the
// file has none.
func (f *File) Tensor(name string) (Tensor, error) {
	i, ok := f.byName[name]
	if !ok {
		return Tensor{}, fmt.Errorf("gguf: %s: no tensor %q", f.name, name)
	}
	return f.tensors[i], nil
}

// Close releases the mapping of a file from Open; every Tensor.Data of the
// file becomes invalid. Closing twice, or closing a FromBytes file, does
// nothing.
func (f *File) Close() error {
	if f.release == nil {
		return nil
	}
	err := f.release()
	f.release = nil
	f.data = nil
	if err != nil {
		return fmt.Errorf("gguf: close %s: %w", f.name, err)
	}
	return nil
}

// parseHeader runs the header parser on a path. The parser panics on some
// malformed input (a zero alignment, a mistyped general.alignment, tensor
// sizes that overflow); that becomes an error here.
func parseHeader(path string) (gf *parser.GGUFFile, err error) {
	defer func() {
		if r := recover(); r != nil {
			gf, err = nil, fmt.Errorf("malformed header (parser panicked: %v)", r)
		}
	}()
	return parser.ParseGGUFFile(path, parser.UseMMap())
}

// load builds a File from the bytes of a whole GGUF file, data, whose header
// the parser reads through parsePath (the same bytes, as a file). Open and
// FromBytes both come here: this is the one place where tensor offsets are
// computed.
func load(name, parsePath string, data []byte) (*File, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("gguf: %s: empty file", name)
	}
	gf, err := parseHeader(parsePath)
	if err != nil {
		if strings.Contains(err.Error(), "follow the header") {
			return nil, fmt.Errorf("gguf: %s: file too short for its tensors (truncated?): %w", name, err)
		}
		return nil, fmt.Errorf("gguf: parse %s: %w", name, err)
	}
	f := &File{name: name, data: data, version: uint32(gf.Header.Version)}
	if err := f.build(gf); err != nil {
		return nil, fmt.Errorf("gguf: %s: %w", name, err)
	}
	return f, nil
}

func (f *File) build(gf *parser.GGUFFile) error {
	if gf.Header.Magic != parser.GGUFMagicGGUFLe {
		return fmt.Errorf("big-endian GGUF is not supported")
	}
	if f.version != 2 && f.version != 3 {
		return fmt.Errorf("GGUF version %d is not supported (2 and 3 are)", f.version)
	}
	if len(gf.SplitPaddings) != 1 {
		return fmt.Errorf("parser read %d files, want 1", len(gf.SplitPaddings))
	}
	if uint64(len(gf.Header.MetadataKV)) != gf.Header.MetadataKVCount ||
		uint64(len(gf.TensorInfos)) != gf.Header.TensorCount {
		// The parser drops split.no from the list it returns.
		return fmt.Errorf("split GGUF files (split.no) are not supported")
	}
	raw, err := walkHeader(f.data, gf.Header.MetadataKVCount, gf.Header.TensorCount)
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}

	// Metadata, with exact strings.
	f.kvs = make([]KV, len(gf.Header.MetadataKV))
	f.keys = make(map[string]int, len(f.kvs))
	for i, kv := range gf.Header.MetadataKV {
		c := converter{strs: raw.kvStrings[i]}
		key, err := c.str(kv.Key)
		if err != nil {
			return fmt.Errorf("metadata key %d: %w", i, err)
		}
		v, err := c.value(kv.ValueType, kv.Value)
		if err != nil {
			return fmt.Errorf("metadata key %q: %w", key, err)
		}
		if len(c.strs) != 0 {
			return fmt.Errorf("metadata key %q: header walk found %d strings more than the parser", key, len(c.strs))
		}
		if _, dup := f.keys[key]; dup {
			return fmt.Errorf("metadata key %q appears twice", key)
		}
		f.keys[key] = i
		f.kvs[i] = KV{Key: key, Value: v}
	}
	if n, ok, _ := f.LookupUint("split.count"); ok && n > 1 {
		return fmt.Errorf("split GGUF files (split.count %d) are not supported", n)
	}

	f.alignment = DefaultAlignment
	if v, ok := f.Value("general.alignment"); ok {
		a, isU32 := v.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("general.alignment must be a uint32 power of two, not %s %v", describe(v), short(v))
		}
		f.alignment = uint64(a)
	}
	if gf.TensorDataStartOffset < 0 || uint64(gf.TensorDataStartOffset) != alignUp(raw.end, f.alignment) {
		return fmt.Errorf("tensor data offset %d disagrees with the header's end %d", gf.TensorDataStartOffset, raw.end)
	}
	f.dataOffset = uint64(gf.TensorDataStartOffset)

	// Tensors: each one's bytes must lie inside the file.
	f.tensors = make([]Tensor, len(gf.TensorInfos))
	f.byName = make(map[string]int, len(f.tensors))
	for i, ti := range gf.TensorInfos {
		name := raw.names[i]
		if strings.TrimSpace(name) != ti.Name {
			return fmt.Errorf("tensor %d: header walk read name %q, parser %q", i, name, ti.Name)
		}
		if _, dup := f.byName[name]; dup {
			return fmt.Errorf("tensor %q appears twice", name)
		}
		t := Tensor{Name: name, Type: TensorType(ti.Type), Dims: slices.Clone(ti.Dimensions)}
		size, err := tensorBytes(t.Type, t.Dims)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		if ti.Offset%f.alignment != 0 {
			return fmt.Errorf("tensor %q: offset %d is not a multiple of the alignment %d", name, ti.Offset, f.alignment)
		}
		start, c1 := bits.Add64(f.dataOffset, ti.Offset, 0)
		end, c2 := bits.Add64(start, size, 0)
		if c1 != 0 || c2 != 0 || end > uint64(len(f.data)) {
			return fmt.Errorf("tensor %q (%s %v, %d bytes at data offset %d) ends past the end of the file (%d bytes): truncated?",
				name, t.Type, t.Dims, size, ti.Offset, len(f.data))
		}
		t.Data = f.data[start:end:end]
		f.byName[name] = i
		f.tensors[i] = t
	}
	return nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// rawHeader holds what walkHeader read: the strings of each metadata pair in
// order (key first, then the strings of the value depth first), the tensor
// names, and the offset where the tensor infos end.
type rawHeader struct {
	kvStrings [][]string
	names     []string
	end       uint64
}

// walkHeader reads the strings of a GGUF v2/v3 header byte for byte. The
// parser has already accepted the header, so this walk only recovers string
// bytes that the parser trims; any disagreement is reported, not guessed.
func walkHeader(data []byte, nkv, ntensor uint64) (*rawHeader, error) {
	w := walker{data: data, pos: 24} // magic, version, tensor count, kv count
	h := &rawHeader{kvStrings: make([][]string, nkv), names: make([]string, ntensor)}
	for i := range nkv {
		w.strs = nil
		w.str()
		typ := ValueType(w.u32())
		w.value(typ, 0)
		if w.err != nil {
			return nil, fmt.Errorf("metadata pair %d: %w", i, w.err)
		}
		h.kvStrings[i] = w.strs
	}
	for i := range ntensor {
		w.strs = nil
		w.str()
		nd := w.u32()
		w.skip(8 * uint64(nd)) // dims
		w.skip(4 + 8)          // type, offset
		if w.err != nil {
			return nil, fmt.Errorf("tensor info %d: %w", i, w.err)
		}
		h.names[i] = w.strs[0]
	}
	h.end = w.pos
	return h, nil
}

type walker struct {
	data []byte
	pos  uint64
	strs []string
	err  error
}

var errShort = errors.New("header ends early")

func (w *walker) take(n uint64) []byte {
	if w.err != nil {
		return nil
	}
	if w.pos > uint64(len(w.data)) || n > uint64(len(w.data))-w.pos {
		w.err = errShort
		return nil
	}
	b := w.data[w.pos : w.pos+n]
	w.pos += n
	return b
}

func (w *walker) skip(n uint64) { w.take(n) }

func (w *walker) u32() uint32 {
	if b := w.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (w *walker) u64() uint64 {
	if b := w.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (w *walker) str() {
	b := w.take(w.u64())
	if w.err == nil {
		w.strs = append(w.strs, string(b))
	}
}

func (w *walker) value(t ValueType, depth int) {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		w.skip(1)
	case TypeUint16, TypeInt16:
		w.skip(2)
	case TypeUint32, TypeInt32, TypeFloat32:
		w.skip(4)
	case TypeUint64, TypeInt64, TypeFloat64:
		w.skip(8)
	case TypeString:
		w.str()
	case TypeArray:
		if depth > 64 {
			w.err = fmt.Errorf("arrays nested deeper than 64")
			return
		}
		et := ValueType(w.u32())
		n := w.u64()
		for i := uint64(0); i < n && w.err == nil; i++ {
			w.value(et, depth+1)
		}
	default:
		if w.err == nil {
			w.err = fmt.Errorf("value type %d", uint32(t))
		}
	}
}

// converter turns the parser's values into this package's, taking each
// string from the exact strings of the header walk.
type converter struct {
	strs []string
}

func (c *converter) str(parsed string) (string, error) {
	if len(c.strs) == 0 {
		return "", fmt.Errorf("parser read more strings than the header walk")
	}
	s := c.strs[0]
	c.strs = c.strs[1:]
	if strings.TrimSpace(s) != parsed {
		return "", fmt.Errorf("parser read string %q where the header holds %q", short(parsed), short(s))
	}
	return s, nil
}

func (c *converter) value(t parser.GGUFMetadataValueType, v any) (any, error) {
	if t == parser.GGUFMetadataValueTypeString {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("parser gave a %T for a string", v)
		}
		return c.str(s)
	}
	if t != parser.GGUFMetadataValueTypeArray {
		if vt, _, err := TypeOf(v); err != nil || vt != ValueType(t) {
			return nil, fmt.Errorf("parser gave a %T for a %s", v, ValueType(t))
		}
		return v, nil
	}
	a, ok := v.(parser.GGUFMetadataKVArrayValue)
	if !ok || uint64(len(a.Array)) != a.Len {
		return nil, fmt.Errorf("parser gave a %T for an array", v)
	}
	switch a.Type {
	case parser.GGUFMetadataValueTypeUint8:
		return elems[uint8](a.Array)
	case parser.GGUFMetadataValueTypeInt8:
		return elems[int8](a.Array)
	case parser.GGUFMetadataValueTypeUint16:
		return elems[uint16](a.Array)
	case parser.GGUFMetadataValueTypeInt16:
		return elems[int16](a.Array)
	case parser.GGUFMetadataValueTypeUint32:
		return elems[uint32](a.Array)
	case parser.GGUFMetadataValueTypeInt32:
		return elems[int32](a.Array)
	case parser.GGUFMetadataValueTypeUint64:
		return elems[uint64](a.Array)
	case parser.GGUFMetadataValueTypeInt64:
		return elems[int64](a.Array)
	case parser.GGUFMetadataValueTypeFloat32:
		return elems[float32](a.Array)
	case parser.GGUFMetadataValueTypeFloat64:
		return elems[float64](a.Array)
	case parser.GGUFMetadataValueTypeBool:
		return elems[bool](a.Array)
	case parser.GGUFMetadataValueTypeString:
		out := make([]string, len(a.Array))
		for i, e := range a.Array {
			s, err := c.value(a.Type, e)
			if err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
			out[i] = s.(string)
		}
		return out, nil
	case parser.GGUFMetadataValueTypeArray:
		out := make([]any, len(a.Array))
		for i, e := range a.Array {
			x, err := c.value(a.Type, e)
			if err != nil {
				return nil, fmt.Errorf("element %d: %w", i, err)
			}
			out[i] = x
		}
		return out, nil
	}
	return nil, fmt.Errorf("array of value type %d", uint32(a.Type))
}

func elems[T any](in []any) ([]T, error) {
	out := make([]T, len(in))
	for i, e := range in {
		x, ok := e.(T)
		if !ok {
			return nil, fmt.Errorf("parser gave a %T in an array of %T", e, x)
		}
		out[i] = x
	}
	return out, nil
}

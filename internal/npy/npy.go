// Package npy reads and writes NumPy .npy arrays of float32 and float16.
//
// Only little-endian float32 ('<f4') and float16 ('<f2') arrays in C order are
// supported, which is what numpy.save writes for those dtypes on all common
// platforms. Format versions 1.0, 2.0 and 3.0 are read; Write and WriteF16
// produce version 1.0 with the header padded to a multiple of 64 bytes.
//
// The format is described at
// https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html.
package npy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/deft-vk/deft/internal/half"
)

// Limits enforced by Read.
const (
	// MaxElements is the largest number of elements Read accepts.
	MaxElements = 1 << 31
	// MaxHeaderLen is the largest header length, in bytes, Read accepts.
	MaxHeaderLen = 1 << 20
	// MaxDims is the largest number of dimensions Read and Write accept
	// (NumPy itself allows 64).
	MaxDims = 64
)

// DType names stored in Array.DType.
const (
	// Float32 is the DType of '<f4' arrays.
	Float32 = "f4"
	// Float16 is the DType of '<f2' arrays.
	Float16 = "f2"
)

var magic = []byte("\x93NUMPY")

// Array is a decoded .npy array.
type Array struct {
	// Shape is the array shape; an empty Shape is a scalar with one element.
	Shape []int
	// DType is Float32 ("f4") or Float16 ("f2").
	DType string
	// F32 holds the elements in C (row-major) order. It is always filled;
	// float16 data is converted exactly.
	F32 []float32
	// F16 holds the raw IEEE binary16 bits when DType is Float16, nil
	// otherwise.
	F16 []uint16
}

// NumElements returns the product of the dimensions of shape and an error when
// a dimension is negative or the product exceeds MaxElements.
func NumElements(shape []int) (int, error) {
	if len(shape) > MaxDims {
		return 0, fmt.Errorf("shape has %d dimensions, more than %d", len(shape), MaxDims)
	}
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in shape %v", d, shape)
		}
		if d == 0 {
			n = 0
			continue
		}
		if n > MaxElements/d {
			return 0, fmt.Errorf("shape %v has more than %d elements", shape, MaxElements)
		}
		n *= d
	}
	return n, nil
}

// Read decodes one .npy array from r. It reads exactly the header and the
// data and nothing more, so bytes following the array stay unread in r.
// Truncated input, unsupported dtypes or byte orders, Fortran-ordered
// multi-dimensional arrays, malformed headers and arrays with more than
// MaxElements elements are reported as errors. Data is read in chunks, so a
// header claiming a huge shape does not cause a huge allocation before the
// truncation is detected.
func Read(r io.Reader) (*Array, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("read npy preamble: %w", noEOF(err))
	}
	if string(pre[:6]) != string(magic) {
		return nil, errors.New("read npy preamble: not a .npy file (bad magic)")
	}
	major, minor := pre[6], pre[7]
	var hlen int
	switch {
	case major == 1 && minor == 0:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("read npy header length: %w", noEOF(err))
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case (major == 2 || major == 3) && minor == 0:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("read npy header length: %w", noEOF(err))
		}
		h := binary.LittleEndian.Uint32(b[:])
		if h > MaxHeaderLen {
			return nil, fmt.Errorf("read npy header: header length %d exceeds limit %d", h, MaxHeaderLen)
		}
		hlen = int(h)
	default:
		return nil, fmt.Errorf("read npy preamble: unsupported format version %d.%d", major, minor)
	}
	if hlen == 0 {
		return nil, errors.New("read npy header: empty header")
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("read npy header: %w", noEOF(err))
	}
	if major < 3 {
		for _, c := range hdr {
			if c >= 0x80 {
				return nil, fmt.Errorf("read npy header: non-ASCII byte 0x%02x in version %d.0 header", c, major)
			}
		}
	}
	h, err := parseHeader(string(hdr))
	if err != nil {
		return nil, fmt.Errorf("parse npy header: %w", err)
	}
	n, err := NumElements(h.shape)
	if err != nil {
		return nil, fmt.Errorf("parse npy header: %w", err)
	}
	a := &Array{Shape: h.shape, DType: h.dtype}
	if err := readData(r, a, n); err != nil {
		return nil, err
	}
	return a, nil
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF: inside a .npy file any end of
// input is a truncation.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readData reads n elements in chunks, so that a header claiming a huge
// shape cannot make Read allocate more than the data actually present.
func readData(r io.Reader, a *Array, n int) error {
	itemSize := 4
	if a.DType == Float16 {
		itemSize = 2
	}
	const chunkElems = 1 << 18
	capHint := min(n, chunkElems)
	a.F32 = make([]float32, 0, capHint)
	if a.DType == Float16 {
		a.F16 = make([]uint16, 0, capHint)
	}
	buf := make([]byte, min(n, chunkElems)*itemSize)
	for done := 0; done < n; {
		m := min(n-done, chunkElems)
		b := buf[:m*itemSize]
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("read npy data: %w after %d of %d elements", noEOF(err), done, n)
		}
		if a.DType == Float16 {
			for i := 0; i < m; i++ {
				h := binary.LittleEndian.Uint16(b[2*i:])
				a.F16 = append(a.F16, h)
				a.F32 = append(a.F32, half.ToFloat32(h))
			}
		} else {
			for i := 0; i < m; i++ {
				a.F32 = append(a.F32, math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
			}
		}
		done += m
	}
	return nil
}

type header struct {
	dtype string
	shape []int
}

// parseHeader parses the Python dict literal of a .npy header, e.g.
// "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }".
func parseHeader(s string) (header, error) {
	p := &pyParser{s: s}
	var h header
	var haveDescr, haveOrder, haveShape bool
	var fortran bool
	if err := p.expect('{'); err != nil {
		return h, err
	}
	for {
		p.skipSpace()
		if p.peek() == '}' {
			p.pos++
			break
		}
		key, err := p.str()
		if err != nil {
			return h, fmt.Errorf("dict key: %w", err)
		}
		if err := p.expect(':'); err != nil {
			return h, err
		}
		switch key {
		case "descr":
			if haveDescr {
				return h, errors.New("duplicate key 'descr'")
			}
			haveDescr = true
			d, err := p.str()
			if err != nil {
				return h, fmt.Errorf("descr: %w", err)
			}
			if h.dtype, err = parseDescr(d); err != nil {
				return h, err
			}
		case "fortran_order":
			if haveOrder {
				return h, errors.New("duplicate key 'fortran_order'")
			}
			haveOrder = true
			if fortran, err = p.boolean(); err != nil {
				return h, fmt.Errorf("fortran_order: %w", err)
			}
		case "shape":
			if haveShape {
				return h, errors.New("duplicate key 'shape'")
			}
			haveShape = true
			if h.shape, err = p.tuple(); err != nil {
				return h, fmt.Errorf("shape: %w", err)
			}
		default:
			return h, fmt.Errorf("unexpected key %q", key)
		}
		p.skipSpace()
		if p.peek() == ',' {
			p.pos++
			continue
		}
		if err := p.expect('}'); err != nil {
			return h, err
		}
		break
	}
	p.skipSpace()
	if p.pos != len(p.s) {
		return h, fmt.Errorf("unexpected %q after header dict", truncate(p.s[p.pos:]))
	}
	if !haveDescr || !haveOrder || !haveShape {
		return h, errors.New("header must contain 'descr', 'fortran_order' and 'shape'")
	}
	if fortran {
		nontrivial := 0
		for _, d := range h.shape {
			if d > 1 {
				nontrivial++
			}
		}
		// With at most one dimension longer than 1, Fortran and C order
		// store the same bytes.
		if nontrivial > 1 {
			return h, fmt.Errorf("fortran_order True is not supported for shape %v; save a C-contiguous array (numpy.ascontiguousarray)", h.shape)
		}
	}
	if h.shape == nil {
		h.shape = []int{}
	}
	return h, nil
}

func parseDescr(d string) (string, error) {
	switch d {
	case "<f4":
		return Float32, nil
	case "<f2":
		return Float16, nil
	case ">f4", ">f2":
		return "", fmt.Errorf("descr %q: big-endian data is not supported", d)
	case "=f4", "=f2", "|f4", "|f2", "f4", "f2":
		return "", fmt.Errorf("descr %q: byte order must be explicit little-endian ('<f4' or '<f2')", d)
	default:
		return "", fmt.Errorf("descr %q: unsupported dtype; only '<f4' (float32) and '<f2' (float16) are supported", truncate(d))
	}
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// pyParser is a minimal parser for the Python literals that appear in .npy
// headers: strings, True/False, and tuples of non-negative integers.
type pyParser struct {
	s   string
	pos int
}

func (p *pyParser) skipSpace() {
	for p.pos < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.pos]) >= 0 {
		p.pos++
	}
}

func (p *pyParser) peek() byte {
	if p.pos < len(p.s) {
		return p.s[p.pos]
	}
	return 0
}

func (p *pyParser) expect(c byte) error {
	p.skipSpace()
	if p.pos >= len(p.s) {
		return fmt.Errorf("expected %q, found end of header", c)
	}
	if p.s[p.pos] != c {
		return fmt.Errorf("expected %q at offset %d, found %q", c, p.pos, p.s[p.pos])
	}
	p.pos++
	return nil
}

// str parses a single- or double-quoted string without escapes.
func (p *pyParser) str() (string, error) {
	p.skipSpace()
	q := p.peek()
	if q != '\'' && q != '"' {
		return "", fmt.Errorf("expected a quoted string at offset %d", p.pos)
	}
	end := strings.IndexByte(p.s[p.pos+1:], q)
	if end < 0 {
		return "", errors.New("unterminated string")
	}
	v := p.s[p.pos+1 : p.pos+1+end]
	if strings.IndexByte(v, '\\') >= 0 {
		return "", errors.New("escape sequences in strings are not supported")
	}
	p.pos += end + 2
	return v, nil
}

func (p *pyParser) boolean() (bool, error) {
	p.skipSpace()
	rest := p.s[p.pos:]
	switch {
	case strings.HasPrefix(rest, "True"):
		p.pos += 4
		return true, nil
	case strings.HasPrefix(rest, "False"):
		p.pos += 5
		return false, nil
	}
	return false, fmt.Errorf("expected True or False at offset %d", p.pos)
}

// tuple parses "()", "(3,)", "(2, 3)", "(2, 3,)" and, leniently, "(3)".
// Python 2 long suffixes ("3L") are accepted.
func (p *pyParser) tuple() ([]int, error) {
	if err := p.expect('('); err != nil {
		return nil, err
	}
	dims := []int{}
	for {
		p.skipSpace()
		if p.peek() == ')' {
			p.pos++
			return dims, nil
		}
		if len(dims) >= MaxDims {
			return nil, fmt.Errorf("more than %d dimensions", MaxDims)
		}
		start := p.pos
		for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
			p.pos++
		}
		if p.pos == start {
			return nil, fmt.Errorf("expected a non-negative integer at offset %d", start)
		}
		d, err := strconv.Atoi(p.s[start:p.pos])
		if err != nil || d > MaxElements {
			return nil, fmt.Errorf("dimension %q is too large", truncate(p.s[start:p.pos]))
		}
		if p.peek() == 'L' || p.peek() == 'l' {
			p.pos++
		}
		dims = append(dims, d)
		p.skipSpace()
		switch p.peek() {
		case ',':
			p.pos++
		case ')':
			p.pos++
			return dims, nil
		default:
			return nil, fmt.Errorf("expected ',' or ')' at offset %d", p.pos)
		}
	}
}

// Write writes data as a little-endian float32 ('<f4') C-order array of the
// given shape in .npy format version 1.0. len(data) must equal the product of shape; an empty shape writes a
// scalar.
func Write(w io.Writer, shape []int, data []float32) error {
	if err := checkShape(shape, len(data)); err != nil {
		return fmt.Errorf("write npy: %w", err)
	}
	bw := bufio.NewWriter(w)
	if err := writeHeader(bw, "<f4", shape); err != nil {
		return err
	}
	var b [4]byte
	for _, f := range data {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(f))
		if _, err := bw.Write(b[:]); err != nil {
			return fmt.Errorf("write npy data: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write npy data: %w", err)
	}
	return nil
}

// WriteF16 writes data, raw IEEE binary16 bit patterns, as a little-endian
// float16 ('<f2') C-order array of the given shape; see Write.
func WriteF16(w io.Writer, shape []int, data []uint16) error {
	if err := checkShape(shape, len(data)); err != nil {
		return fmt.Errorf("write npy: %w", err)
	}
	bw := bufio.NewWriter(w)
	if err := writeHeader(bw, "<f2", shape); err != nil {
		return err
	}
	var b [2]byte
	for _, h := range data {
		binary.LittleEndian.PutUint16(b[:], h)
		if _, err := bw.Write(b[:]); err != nil {
			return fmt.Errorf("write npy data: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write npy data: %w", err)
	}
	return nil
}

func checkShape(shape []int, n int) error {
	want, err := NumElements(shape)
	if err != nil {
		return err
	}
	if want != n {
		return fmt.Errorf("shape %v has %d elements but data has %d", shape, want, n)
	}
	return nil
}

// formatShape formats shape as a Python tuple: "()", "(3,)", "(2, 3)".
func formatShape(shape []int) string {
	var sb strings.Builder
	sb.WriteByte('(')
	for i, d := range shape {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(strconv.Itoa(d))
	}
	if len(shape) == 1 {
		sb.WriteByte(',')
	}
	sb.WriteByte(')')
	return sb.String()
}

// writeHeader writes the magic, version 1.0, header length and the header
// dict, padded with spaces and a final newline so that the data starts at a
// multiple of 64 bytes. With at most MaxDims dimensions the header always
// fits the 16-bit length of version 1.0.
func writeHeader(w io.Writer, descr string, shape []int) error {
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, formatShape(shape))
	const align, prefix = 64, 10
	pad := (align - (prefix+len(dict)+1)%align) % align
	total := len(dict) + pad + 1
	buf := make([]byte, 0, prefix+total)
	buf = append(buf, magic...)
	buf = append(buf, 1, 0)
	buf = binary.LittleEndian.AppendUint16(buf, uint16(total))
	buf = append(buf, dict...)
	buf = append(buf, strings.Repeat(" ", pad)...)
	buf = append(buf, '\n')
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write npy header: %w", err)
	}
	return nil
}

// Package spirv reflects the interface of a compiled compute shader: its
// storage-buffer bindings, push-constant block, specialization constants and
// struct layouts, read straight from the SPIR-V words. Tests use it to prove
// that each kernel's Go contract (package kernels) matches its shader.
package spirv

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
)

// Opcodes and decorations used here (SPIR-V 1.6 specification, section 3).
const (
	opName              = 5
	opMemberName        = 6
	opTypeInt           = 21
	opTypeFloat         = 22
	opTypeVector        = 23
	opTypeArray         = 28
	opTypeRuntimeArray  = 29
	opTypeStruct        = 30
	opTypePointer       = 32
	opConstant          = 43
	opSpecConstantTrue  = 48
	opSpecConstantFalse = 49
	opSpecConstant      = 50
	opSpecConstantComp  = 51
	opVariable          = 59
	opDecorate          = 71
	opMemberDecorate    = 72
	opCapability        = 17
	opExecutionModeId   = 331
	modeLocalSizeID     = 38

	decSpecID       = 1
	decBlock        = 2
	decArrayStride  = 6
	decBuiltIn      = 11
	decNonWritable  = 24
	decNonReadable  = 25
	decBinding      = 33
	decDescriptorSt = 34
	decOffset       = 35

	builtInWorkgroupSize = 25

	storagePushConstant = 9
	storageStorageBuf   = 12
	storageUniform      = 2
)

// Member is one member of a struct type.
type Member struct {
	Name   string
	Offset uint32
	Size   uint32 // bytes; 0 for a runtime array
	Type   *Type
}

// Type is a reflected type: a scalar, vector, array or struct.
type Type struct {
	Kind    string // "int", "float", "vector", "array", "runtime_array", "struct", "other"
	Name    string // struct name (OpName), if any
	Width   uint32 // scalar bits
	Count   uint32 // vector components or array length
	Stride  uint32 // array stride (ArrayStride decoration)
	Elem    *Type  // vector/array element
	Members []Member
}

// Size is the byte size of a sized type (runtime arrays count 0).
func (t *Type) Size() uint32 {
	switch t.Kind {
	case "int", "float":
		return t.Width / 8
	case "vector":
		return t.Count * t.Elem.Size()
	case "array":
		return t.Count * t.Stride
	case "struct":
		var end uint32
		for _, m := range t.Members {
			end = max(end, m.Offset+m.Size)
		}
		return end
	}
	return 0
}

// Buffer is one storage-buffer variable (aliased views of a binding appear
// once each).
type Buffer struct {
	Set, Binding uint32
	Block        string // block type name
	ReadOnly     bool   // every member NonWritable
	WriteOnly    bool   // every member NonReadable
	Type         *Type
}

// SpecConst is one specialization constant.
type SpecConst struct {
	ID      uint32
	Name    string // OpName; "local_size_x" etc. for workgroup-size components
	Default uint32
}

// Module is the reflected interface of a compute shader.
type Module struct {
	Buffers      []Buffer
	Push         *Type // push-constant block type, nil when none
	Spec         []SpecConst
	Structs      map[string]*Type // every named struct type with an explicit layout
	Capabilities []uint32
}

// SpecByID returns the specialization constant with the given id.
func (m *Module) SpecByID(id uint32) (SpecConst, bool) {
	for _, s := range m.Spec {
		if s.ID == id {
			return s, true
		}
	}
	return SpecConst{}, false
}

type rawType struct {
	op    uint32
	words []uint32
}

// Parse reflects a SPIR-V module.
func Parse(code []byte) (*Module, error) {
	if len(code) < 20 || len(code)%4 != 0 {
		return nil, fmt.Errorf("spirv: %d bytes is not a module", len(code))
	}
	words := make([]uint32, len(code)/4)
	for i := range words {
		words[i] = binary.LittleEndian.Uint32(code[4*i:])
	}
	if words[0] != 0x07230203 {
		return nil, fmt.Errorf("spirv: bad magic %#x", words[0])
	}
	names := map[uint32]string{}
	memberNames := map[uint32]map[uint32]string{}
	decor := map[uint32]map[uint32][]uint32{}                  // id -> decoration -> operands
	memberDecor := map[uint32]map[uint32]map[uint32][]uint32{} // id -> member -> decoration -> operands
	types := map[uint32]rawType{}
	constants := map[uint32]uint32{}
	type variable struct{ ptrType, storage uint32 }
	vars := map[uint32]variable{}
	specs := map[uint32]uint32{} // id -> default
	var composites [][]uint32
	var localSizeIDs []uint32 // OpExecutionModeId LocalSizeId operands (SPIR-V 1.6 targets)
	m := &Module{Structs: map[string]*Type{}}
	for i := 5; i < len(words); {
		wc := int(words[i] >> 16)
		op := words[i] & 0xffff
		if wc == 0 || i+wc > len(words) {
			return nil, fmt.Errorf("spirv: bad instruction at word %d", i)
		}
		ops := words[i+1 : i+wc]
		switch op {
		case opCapability:
			m.Capabilities = append(m.Capabilities, ops[0])
		case opName:
			names[ops[0]] = str(ops[1:])
		case opMemberName:
			if memberNames[ops[0]] == nil {
				memberNames[ops[0]] = map[uint32]string{}
			}
			memberNames[ops[0]][ops[1]] = str(ops[2:])
		case opDecorate:
			if decor[ops[0]] == nil {
				decor[ops[0]] = map[uint32][]uint32{}
			}
			decor[ops[0]][ops[1]] = ops[2:]
		case opMemberDecorate:
			if memberDecor[ops[0]] == nil {
				memberDecor[ops[0]] = map[uint32]map[uint32][]uint32{}
			}
			if memberDecor[ops[0]][ops[1]] == nil {
				memberDecor[ops[0]][ops[1]] = map[uint32][]uint32{}
			}
			memberDecor[ops[0]][ops[1]][ops[2]] = ops[3:]
		case opTypeInt, opTypeFloat, opTypeVector, opTypeArray, opTypeRuntimeArray, opTypeStruct, opTypePointer:
			types[ops[0]] = rawType{op, ops}
		case opConstant:
			constants[ops[1]] = ops[2]
		case opSpecConstant:
			specs[ops[1]] = ops[2]
			constants[ops[1]] = ops[2]
		case opSpecConstantTrue:
			specs[ops[1]] = 1
		case opSpecConstantFalse:
			specs[ops[1]] = 0
		case opSpecConstantComp:
			composites = append(composites, ops)
		case opExecutionModeId:
			if len(ops) >= 5 && ops[1] == modeLocalSizeID {
				localSizeIDs = ops[2:5]
			}
		case opVariable:
			vars[ops[1]] = variable{ops[0], ops[2]}
		}
		i += wc
	}
	var build func(id uint32, depth int) (*Type, error)
	build = func(id uint32, depth int) (*Type, error) {
		if depth > 32 {
			return nil, fmt.Errorf("spirv: types nested too deeply")
		}
		rt, ok := types[id]
		if !ok {
			return &Type{Kind: "other"}, nil
		}
		w := rt.words
		t := &Type{Name: names[id]}
		switch rt.op {
		case opTypeInt:
			t.Kind, t.Width = "int", w[1]
		case opTypeFloat:
			t.Kind, t.Width = "float", w[1]
		case opTypeVector:
			e, err := build(w[1], depth+1)
			if err != nil {
				return nil, err
			}
			t.Kind, t.Elem, t.Count = "vector", e, w[2]
		case opTypeArray, opTypeRuntimeArray:
			e, err := build(w[1], depth+1)
			if err != nil {
				return nil, err
			}
			t.Kind, t.Elem = "array", e
			if rt.op == opTypeRuntimeArray {
				t.Kind = "runtime_array"
			} else {
				// Lengths from specialization-constant expressions
				// (shared arrays) stay 0: only buffer and push layouts matter.
				t.Count = constants[w[2]]
			}
			if s := decor[id][decArrayStride]; len(s) > 0 {
				t.Stride = s[0]
			}
		case opTypeStruct:
			t.Kind = "struct"
			laidOut := false
			for mi, mt := range w[1:] {
				e, err := build(mt, depth+1)
				if err != nil {
					return nil, err
				}
				mem := Member{Name: memberNames[id][uint32(mi)], Type: e, Size: e.Size()}
				if o := memberDecor[id][uint32(mi)][decOffset]; len(o) > 0 {
					mem.Offset, laidOut = o[0], true
				}
				t.Members = append(t.Members, mem)
			}
			// A struct used both in a buffer and as a local variable has two
			// types of one name: keep the one with an explicit layout.
			if t.Name != "" && laidOut {
				m.Structs[t.Name] = t
			}
		case opTypePointer:
			return build(w[2], depth+1)
		default:
			t.Kind = "other"
		}
		return t, nil
	}
	for id, rt := range types {
		if rt.op == opTypeStruct {
			if _, err := build(id, 0); err != nil {
				return nil, err
			}
		}
	}
	for id, v := range vars {
		t, err := build(v.ptrType, 0)
		if err != nil {
			return nil, err
		}
		switch v.storage {
		case storagePushConstant:
			m.Push = t
		case storageStorageBuf, storageUniform:
			if t.Kind != "struct" {
				continue
			}
			b := Buffer{Block: t.Name, Type: t, ReadOnly: true, WriteOnly: true}
			if d := decor[id][decBinding]; len(d) > 0 {
				b.Binding = d[0]
			}
			if d := decor[id][decDescriptorSt]; len(d) > 0 {
				b.Set = d[0]
			}
			_, varRO := decor[id][decNonWritable]
			_, varWO := decor[id][decNonReadable]
			structID := types[v.ptrType].words[2]
			for mi := range t.Members {
				md := memberDecor[structID][uint32(mi)]
				if _, ok := md[decNonWritable]; !ok && !varRO {
					b.ReadOnly = false
				}
				if _, ok := md[decNonReadable]; !ok && !varWO {
					b.WriteOnly = false
				}
			}
			m.Buffers = append(m.Buffers, b)
		}
	}
	for id, def := range specs {
		s := SpecConst{ID: ^uint32(0), Name: names[id], Default: def}
		if d := decor[id][decSpecID]; len(d) > 0 {
			s.ID = d[0]
		}
		m.Spec = append(m.Spec, s)
	}
	// Workgroup-size components declared with local_size_*_id are spec
	// constants that glslang leaves unnamed: name them after the builtin.
	for _, c := range composites {
		if b := decor[c[1]][decBuiltIn]; len(b) == 0 || b[0] != builtInWorkgroupSize {
			continue
		}
		for i, comp := range c[2:] {
			for j := range m.Spec {
				if d := decor[comp][decSpecID]; len(d) > 0 && d[0] == m.Spec[j].ID && m.Spec[j].Name == "" {
					m.Spec[j].Name = "local_size_" + string(rune('x'+i))
				}
			}
		}
	}
	// Newer targets declare the workgroup size with OpExecutionModeId
	// LocalSizeId, and glslang may then emit the same SpecId twice (the
	// execution mode's constant and gl_WorkGroupSize's): name them too, and
	// keep one entry per SpecId, a named one.
	for i, id := range localSizeIDs {
		if d := decor[id][decSpecID]; len(d) > 0 {
			for j := range m.Spec {
				if m.Spec[j].ID == d[0] && m.Spec[j].Name == "" {
					m.Spec[j].Name = "local_size_" + string(rune('x'+i))
				}
			}
		}
	}
	slices.SortFunc(m.Spec, func(a, b SpecConst) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(b.Name, a.Name))
	})
	m.Spec = slices.CompactFunc(m.Spec, func(a, b SpecConst) bool { return a.ID == b.ID && a.ID != ^uint32(0) })

	slices.SortFunc(m.Buffers, func(a, b Buffer) int {
		return cmp.Or(cmp.Compare(a.Binding, b.Binding), cmp.Compare(a.Block, b.Block))
	})
	return m, nil
}

// str decodes a SPIR-V literal string (nul-terminated UTF-8 in words).
func str(w []uint32) string {
	b := make([]byte, 0, 4*len(w))
	for _, x := range w {
		for k := 0; k < 4; k++ {
			c := byte(x >> (8 * k))
			if c == 0 {
				return string(b)
			}
			b = append(b, c)
		}
	}
	return string(b)
}

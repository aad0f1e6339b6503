package kernels

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode"

	"github.com/deft-vk/deft/internal/spirv"
	"github.com/deft-vk/deft/shaders"
	"github.com/deft-vk/deft/vk"
	"github.com/stretchr/testify/require"
)

// checkStruct compares a Go struct (fields of 4-byte scalars or arrays of
// them, encoded by encoding/binary with no padding) with a reflected GLSL
// struct: names, offsets, sizes and the total size.
func checkStruct(what string, goVal any, t *spirv.Type) []string {
	var errs []string
	gt := reflect.TypeOf(goVal)
	if t == nil || t.Kind != "struct" {
		return []string{fmt.Sprintf("%s: the shader declares no such struct", what)}
	}
	if gt.NumField() != len(t.Members) {
		errs = append(errs, fmt.Sprintf("%s: Go %s has %d fields, the shader's block %d members", what, gt.Name(), gt.NumField(), len(t.Members)))
	}
	off := uint32(0)
	for i := 0; i < gt.NumField() && i < len(t.Members); i++ {
		f := gt.Field(i)
		m := t.Members[i]
		size := uint32(binary.Size(reflect.Zero(f.Type).Interface()))
		if want := upperFirst(m.Name); f.Name != want {
			errs = append(errs, fmt.Sprintf("%s: field %d is %s in Go, %s (%s) in the shader", what, i, f.Name, m.Name, want))
		}
		if off != m.Offset {
			errs = append(errs, fmt.Sprintf("%s: %s at byte %d in Go, %s at byte %d in the shader", what, f.Name, off, m.Name, m.Offset))
		}
		if size != m.Size {
			errs = append(errs, fmt.Sprintf("%s: %s is %d bytes in Go, %s is %d bytes in the shader", what, f.Name, size, m.Name, m.Size))
		}
		off += size
	}
	if total := uint32(binary.Size(goVal)); total != t.Size() {
		errs = append(errs, fmt.Sprintf("%s: %d bytes in Go, %d in the shader", what, total, t.Size()))
	}
	return errs
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	r := []rune(s)
	r[0] = unicode.ToUpper(r[0])
	return string(r)
}

// checkContract lists every disagreement between c and a variant's module.
func checkContract(c *Contract, m *spirv.Module) []string {
	var errs []string
	for i, b := range c.Bindings {
		var views []spirv.Buffer
		for _, sb := range m.Buffers {
			if sb.Set == 0 && sb.Binding == uint32(i) {
				views = append(views, sb)
			}
		}
		if len(views) == 0 {
			errs = append(errs, fmt.Sprintf("binding %d (%s): not in the shader", i, b.Block))
			continue
		}
		named, readOnly := false, true
		for _, v := range views {
			named = named || v.Block == b.Block
			readOnly = readOnly && v.ReadOnly
		}
		if !named {
			errs = append(errs, fmt.Sprintf("binding %d: the contract says block %s, the shader has %v", i, b.Block, blockNames(views)))
		}
		if b.Access == vk.Read && !readOnly {
			errs = append(errs, fmt.Sprintf("binding %d (%s): the contract says read-only, the shader may write it", i, b.Block))
		}
		if b.Access == vk.Write && readOnly {
			errs = append(errs, fmt.Sprintf("binding %d (%s): the contract says written, the shader declares it readonly", i, b.Block))
		}
	}
	for _, sb := range m.Buffers {
		if sb.Set != 0 || sb.Binding >= uint32(len(c.Bindings)) {
			errs = append(errs, fmt.Sprintf("shader buffer %s at set %d binding %d is not in the contract", sb.Block, sb.Set, sb.Binding))
		}
	}
	switch {
	case c.Push == nil && m.Push != nil:
		errs = append(errs, "the shader has a push-constant block, the contract none")
	case c.Push != nil && m.Push == nil:
		errs = append(errs, "the contract has push constants, the shader none")
	case c.Push != nil:
		errs = append(errs, checkStruct("push constants", c.Push, m.Push)...)
	}
	for _, s := range c.Spec {
		got, ok := m.SpecByID(s.ID)
		if !ok {
			errs = append(errs, fmt.Sprintf("specialization constant %d (%s): not in the shader", s.ID, s.Name))
		} else if got.Name != s.Name {
			errs = append(errs, fmt.Sprintf("specialization constant %d: %s in the contract, %s in the shader", s.ID, s.Name, got.Name))
		}
	}
	for _, s := range m.Spec {
		found := false
		for _, cs := range c.Spec {
			found = found || cs.ID == s.ID
		}
		if !found {
			errs = append(errs, fmt.Sprintf("shader specialization constant %d (%s) is not in the contract", s.ID, s.Name))
		}
	}
	for name, rec := range c.Records {
		errs = append(errs, checkStruct("record "+name, rec, m.Structs[name])...)
	}
	return errs
}

func blockNames(bs []spirv.Buffer) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.Block
	}
	return out
}

// Every variant of every kernel matches its contract, and every embedded
// module belongs to a contract.
func TestContractsMatchSPIRV(t *testing.T) {
	used := map[string]bool{}
	for _, c := range All() {
		for _, v := range c.Variants {
			used[v.Module] = true
			t.Run(c.Name+"/"+v.Name, func(t *testing.T) {
				code, err := shaders.SPIRV(v.Module)
				require.NoError(t, err)
				m, err := spirv.Parse(code)
				require.NoError(t, err)
				require.NotEmpty(t, m.Buffers, "reflection found no buffers")
				if errs := checkContract(c, m); len(errs) > 0 {
					t.Errorf("contract %s disagrees with shaders/spv/%s.spv:\n  %s", c.Name, v.Module, strings.Join(errs, "\n  "))
				}
			})
		}
	}
	for _, name := range shaders.Names() {
		require.True(t, used[name], "shaders/spv/%s.spv belongs to no kernel contract", name)
	}
}

// The check is not vacuous: breaking a contract on purpose is reported.
func TestContractCheckCatchesMistakes(t *testing.T) {
	code, err := shaders.SPIRV("partial_attn")
	require.NoError(t, err)
	m, err := spirv.Parse(code)
	require.NoError(t, err)
	require.Empty(t, checkContract(PartialAttn, m))

	type swapped struct {
		NItems, GridX, ItemsOff, NumSlots uint32
		Scale, Unit                       float32
	}
	type short struct{ NItems, ItemsOff, GridX, NumSlots uint32 }
	type badRecord struct {
		SlotsOff, NumSlots, QueriesOff, NumQueries, MaskOff, MaskWords, PartialBase uint32
	}
	cases := map[string]func(c *Contract){
		"swapped push fields": func(c *Contract) { c.Push = swapped{} },
		"missing push field":  func(c *Contract) { c.Push = short{} },
		"record too short":    func(c *Contract) { c.Records = map[string]any{"ItemRecord": badRecord{}} },
		"wrong spec id":       func(c *Contract) { c.Spec = append([]Spec{{9, "D"}}, c.Spec[2:]...) },
		"read-only output": func(c *Contract) {
			c.Bindings = append(append([]Binding{}, c.Bindings[:4]...), Binding{"PartO", vk.Read}, c.Bindings[5])
		},
		"missing binding":  func(c *Contract) { c.Bindings = c.Bindings[:5] },
		"wrong block name": func(c *Contract) { c.Bindings = append([]Binding{{"Kbuf", vk.Read}}, c.Bindings[1:]...) },
	}
	for name, breakIt := range cases {
		c := *PartialAttn
		breakIt(&c)
		errs := checkContract(&c, m)
		require.NotEmpty(t, errs, name)
		t.Logf("%s: %s", name, strings.Join(errs, "; "))
	}
}

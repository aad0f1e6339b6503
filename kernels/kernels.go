// Package kernels is the one Go-side description of every compute kernel's
// interface: its storage-buffer bindings, its push-constant block (a typed
// struct encoded with encoding/binary), its specialization constants by
// name, its record layouts, and its SPIR-V variants with the device
// features each one needs. Consumers ask a Contract for a ready Pipeline
// instead of writing vk.KernelSpecs; a test reads the committed SPIR-V and
// fails when a contract and its shader disagree.
package kernels

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/deft-vk/deft/shaders"
	"github.com/deft-vk/deft/vk"
)

// Binding is one storage buffer of a kernel, at set 0 and binding = its
// index in Contract.Bindings.
type Binding struct {
	// Block is the GLSL buffer block's type name (aliased views of one
	// binding may have other names; this is the one the contract checks).
	Block  string
	Access vk.Access
}

// Spec is a specialization constant: its constant_id and GLSL name
// (local_size_x for local_size_x_id).
type Spec struct {
	ID   uint32
	Name string
}

// Variant is one compiled form of a kernel.
type Variant struct {
	Name   string // "scalar", "coopmat", ...
	Module string // SPIR-V module: shaders/spv/<Module>.spv
	// Requires says why a device cannot run the variant; nil means any
	// device can.
	Requires func(info *vk.DeviceInfo) error
}

// Contract is a kernel's interface, written once.
type Contract struct {
	Name     string
	Doc      string
	Bindings []Binding
	// Push is the zero value of the push-constant struct (fields of
	// uint32, int32, float32 or arrays of them, in GLSL member order; Go
	// field name = GLSL member name with its first letter upper-cased); nil
	// when the kernel has no push constants.
	Push any
	Spec []Spec
	// Records are structs the kernel reads from a buffer, by GLSL struct
	// name (zero values, same field rules as Push).
	Records map[string]any
	// Variants in order of preference; the last must run anywhere.
	Variants []Variant
	// TestOnly marks kernels that only the runtime's own tests use.
	TestOnly bool
}

var (
	regMu    sync.Mutex
	registry = map[string]*Contract{}
)

// register adds a contract at init; a duplicate name is a programming error.
func register(c *Contract) *Contract {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[c.Name]; dup {
		panic("kernels: contract " + c.Name + " registered twice")
	}
	if len(c.Variants) == 0 || c.Variants[len(c.Variants)-1].Requires != nil {
		panic("kernels: contract " + c.Name + " needs a last variant that runs anywhere")
	}
	registry[c.Name] = c
	return c
}

// All returns every registered contract, sorted by name.
func All() []*Contract {
	regMu.Lock()
	defer regMu.Unlock()
	out := make([]*Contract, 0, len(registry))
	for _, c := range registry {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Lookup returns the contract of a kernel by name.
func Lookup(name string) (*Contract, error) {
	regMu.Lock()
	defer regMu.Unlock()
	c, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("kernels: no kernel named %q", name)
	}
	return c, nil
}

// PushSize is the push block's size in bytes.
func (c *Contract) PushSize() uint32 {
	if c.Push == nil {
		return 0
	}
	return uint32(binary.Size(c.Push))
}

// Choice is the variant chosen for a device, with why the preferred ones
// were passed over.
type Choice struct {
	Variant  Variant
	Forced   bool     // chosen by an override
	Rejected []string // "coopmat: device lacks VK_KHR_cooperative_matrix"
}

// Choose picks the first variant the device supports, unless an override
// (SetOverride, $DEFT_KERNEL_VARIANT) names one; a forced variant the
// device cannot run is an error.
func (c *Contract) Choose(info *vk.DeviceInfo) (Choice, error) {
	if err := OverrideError(); err != nil {
		return Choice{}, err
	}
	if want, ok := overrideFor(c.Name); ok {
		for _, v := range c.Variants {
			if v.Name != want {
				continue
			}
			if v.Requires != nil {
				if err := v.Requires(info); err != nil {
					return Choice{}, fmt.Errorf("kernel %s: variant %s forced but unsupported on %s: %w", c.Name, want, info.Name, err)
				}
			}
			return Choice{Variant: v, Forced: true}, nil
		}
		// A global override names a variant some kernels lack: those keep
		// their automatic choice.
		if !overrideGlobalOnly(c.Name) {
			return Choice{}, fmt.Errorf("kernel %s has no variant %q (have %s)", c.Name, want, strings.Join(c.VariantNames(), ", "))
		}
	}
	var ch Choice
	for _, v := range c.Variants {
		if v.Requires != nil {
			if err := v.Requires(info); err != nil {
				ch.Rejected = append(ch.Rejected, v.Name+": "+err.Error())
				continue
			}
		}
		ch.Variant = v
		return ch, nil
	}
	return Choice{}, fmt.Errorf("kernel %s: no variant runs on %s", c.Name, info.Name)
}

// VariantNames lists the variants' names in preference order.
func (c *Contract) VariantNames() []string {
	out := make([]string, len(c.Variants))
	for i, v := range c.Variants {
		out[i] = v.Name
	}
	return out
}

// SpecValues are specialization constants by GLSL name.
type SpecValues map[string]uint32

// Pipeline is a kernel created through its contract.
type Pipeline struct {
	*vk.Kernel
	Contract *Contract
	Variant  Variant
}

// Pipeline returns the kernel's pipeline on d for the given specialization
// (every constant of the contract must be given, and no other), in the
// variant chosen for d. Pipelines are cached by the device.
func (c *Contract) Pipeline(d *vk.Device, spec SpecValues) (*Pipeline, error) {
	ch, err := c.Choose(&d.Info)
	if err != nil {
		return nil, err
	}
	return c.pipelineVariant(d, ch.Variant, spec)
}

// PipelineVariant is Pipeline with an explicit variant (tests and
// benchmarks that compare variants side by side).
func (c *Contract) PipelineVariant(d *vk.Device, variant string, spec SpecValues) (*Pipeline, error) {
	for _, v := range c.Variants {
		if v.Name == variant {
			if v.Requires != nil {
				if err := v.Requires(&d.Info); err != nil {
					return nil, fmt.Errorf("kernel %s variant %s on %s: %w", c.Name, variant, d.Info.Name, err)
				}
			}
			return c.pipelineVariant(d, v, spec)
		}
	}
	return nil, fmt.Errorf("kernel %s has no variant %q (have %s)", c.Name, variant, strings.Join(c.VariantNames(), ", "))
}

func (c *Contract) pipelineVariant(d *vk.Device, v Variant, spec SpecValues) (*Pipeline, error) {
	ids := make(map[uint32]uint32, len(spec))
	for _, s := range c.Spec {
		val, ok := spec[s.Name]
		if !ok {
			return nil, fmt.Errorf("create pipeline %s: specialization constant %s not given", c.Name, s.Name)
		}
		ids[s.ID] = val
	}
	if len(spec) != len(c.Spec) {
		for name := range spec {
			if !slices.ContainsFunc(c.Spec, func(s Spec) bool { return s.Name == name }) {
				return nil, fmt.Errorf("create pipeline %s: no specialization constant %s", c.Name, name)
			}
		}
	}
	code, err := shaders.SPIRV(v.Module)
	if err != nil {
		return nil, fmt.Errorf("create pipeline %s: %w", c.Name, err)
	}
	access := make([]vk.Access, len(c.Bindings))
	for i, b := range c.Bindings {
		access[i] = b.Access
	}
	k, err := d.Kernel(vk.KernelSpec{Name: c.Name + "/" + v.Name, SPIRV: code, Bindings: access, PushSize: c.PushSize(), Spec: ids})
	if err != nil {
		return nil, err
	}
	return &Pipeline{Kernel: k, Contract: c, Variant: v}, nil
}

// Dispatch records the pipeline over groups with push constants push (a
// value of the contract's push type, or nil when it has none) and one
// buffer range per binding.
func (p *Pipeline) Dispatch(rec *vk.Recorder, groups [3]uint32, push any, bufs ...vk.Range) error {
	c := p.Contract
	if len(bufs) != len(c.Bindings) {
		return fmt.Errorf("dispatch %s: %d buffers for %d bindings", c.Name, len(bufs), len(c.Bindings))
	}
	var raw []byte
	if c.Push != nil {
		if reflect.TypeOf(push) != reflect.TypeOf(c.Push) {
			return fmt.Errorf("dispatch %s: push constants are %T, the contract says %T", c.Name, push, c.Push)
		}
		var err error
		if raw, err = EncodePush(push); err != nil {
			return fmt.Errorf("dispatch %s: %w", c.Name, err)
		}
	} else if push != nil {
		return fmt.Errorf("dispatch %s: the kernel takes no push constants", c.Name)
	}
	return rec.Dispatch(p.Kernel, groups, raw, bufs...)
}

// EncodePush lays out a push-constant struct as the shader reads it
// (little-endian, fields in order: std430 for 4-byte scalars and arrays).
func EncodePush(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
		return nil, fmt.Errorf("encode push constants %T: %w", v, err)
	}
	return b.Bytes(), nil
}

// KernelChoice is a kernel's name with the variant a device would run.
type KernelChoice struct {
	Kernel string
	Choice
	Err error // no variant runs (or a forced one cannot)
}

// Describe lists, for each non-test kernel, the variant the device would
// run (for `deft devices`).
func Describe(info *vk.DeviceInfo) []KernelChoice {
	var out []KernelChoice
	for _, c := range All() {
		if c.TestOnly {
			continue
		}
		ch, err := c.Choose(info)
		out = append(out, KernelChoice{Kernel: c.Name, Choice: ch, Err: err})
	}
	return out
}

package vk

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"unsafe"

	vk "github.com/vulkan-go/vulkan"
)

// Access says how a kernel uses a storage-buffer binding; the recorder
// derives barriers from it.
type Access int

const (
	// Read: the kernel only reads the binding (declare it readonly in GLSL).
	Read Access = iota
	// Write: the kernel writes (and may read) the binding.
	Write
)

// KernelSpec describes a compute pipeline: SPIR-V with entry point main,
// storage buffers at set 0 bindings 0..len(Bindings)-1, an optional push
// constant block and specialization constants by constant_id.
type KernelSpec struct {
	Name     string
	SPIRV    []byte
	Bindings []Access
	PushSize uint32
	Spec     map[uint32]uint32
}

func (s KernelSpec) key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%d|%d|%v|", s.Name, len(s.SPIRV), s.PushSize, s.Bindings)
	ids := make([]uint32, 0, len(s.Spec))
	for id := range s.Spec {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		fmt.Fprintf(&b, "%d=%d,", id, s.Spec[id])
	}
	return b.String()
}

// Kernel is a compute pipeline with its layouts.
type Kernel struct {
	Name     string
	d        *Device
	bindings []Access
	pushSize uint32
	pipeline vk.Pipeline
	layout   vk.PipelineLayout
	setLay   vk.DescriptorSetLayout
}

// validateSPIRV checks the header so that garbage never reaches the driver
// (drivers may crash on it; only the validation layer would catch it).
func validateSPIRV(code []byte) error {
	if len(code) < 20 || len(code)%4 != 0 {
		return fmt.Errorf("invalid SPIR-V: %d bytes is not a whole module (need a multiple of 4, at least 20)", len(code))
	}
	if magic := binary.LittleEndian.Uint32(code); magic != 0x07230203 {
		return fmt.Errorf("invalid SPIR-V: magic number %#08x, want 0x07230203", magic)
	}
	if v := binary.LittleEndian.Uint32(code[4:]); v < 0x00010000 || v > 0x00010600 {
		return fmt.Errorf("invalid SPIR-V: unsupported version %#x", v)
	}
	return nil
}

// Kernel returns the pipeline for spec, creating it on first use; pipelines
// are cached per device by name, code and specialization.
func (d *Device) Kernel(spec KernelSpec) (*Kernel, error) {
	key := spec.key()
	d.mu.Lock()
	k := d.kernels[key]
	d.mu.Unlock()
	if k != nil {
		return k, nil
	}
	k, err := d.newKernel(spec)
	if err != nil {
		return nil, fmt.Errorf("create pipeline %s: %w", spec.Name, err)
	}
	d.mu.Lock()
	if old := d.kernels[key]; old != nil {
		d.mu.Unlock()
		k.destroy()
		return old, nil
	}
	d.kernels[key] = k
	d.mu.Unlock()
	return k, nil
}

func (d *Device) newKernel(spec KernelSpec) (*Kernel, error) {
	if err := validateSPIRV(spec.SPIRV); err != nil {
		return nil, err
	}
	if len(spec.Bindings) > maxBindings {
		return nil, fmt.Errorf("%d storage buffers: at most %d", len(spec.Bindings), maxBindings)
	}
	if spec.PushSize > d.Info.MaxPushConstants || spec.PushSize%4 != 0 {
		return nil, fmt.Errorf("push constant size %d: must be a multiple of 4 and at most %d", spec.PushSize, d.Info.MaxPushConstants)
	}
	var a arena
	defer a.free()
	k := &Kernel{Name: spec.Name, d: d, bindings: append([]Access(nil), spec.Bindings...), pushSize: spec.PushSize}

	// The layouts are built in C (the shim), like the pipeline below.
	var setLay, layout C.uint64_t
	r := vk.Result(C.deft_create_layouts(unsafe.Pointer(d.inst.handle), unsafe.Pointer(d.handle), C.uint32_t(len(spec.Bindings)),
		C.uint32_t(spec.PushSize), &setLay, &layout))
	if setLay != 0 {
		k.setLay = *(*vk.DescriptorSetLayout)(unsafe.Pointer(&setLay))
	}
	if err := check("vkCreatePipelineLayout", r); err != nil {
		k.destroy()
		return nil, err
	}
	k.layout = *(*vk.PipelineLayout)(unsafe.Pointer(&layout))
	code := a.cbytes(spec.SPIRV)
	var module vk.ShaderModule
	if err := check("vkCreateShaderModule", vk.CreateShaderModule(d.handle, &vk.ShaderModuleCreateInfo{
		SType:    vk.StructureTypeShaderModuleCreateInfo,
		CodeSize: uint(len(spec.SPIRV)),
		PCode:    unsafe.Slice((*uint32)(code), len(spec.SPIRV)/4),
	}, nil, &module)); err != nil {
		k.destroy()
		return nil, err
	}
	defer vk.DestroyShaderModule(d.handle, module, nil)

	// The create info is built in C (the shim): the binding would put the
	// specialization info in memory that its finalizers may free during
	// the call.
	ids := make([]uint32, 0, len(spec.Spec))
	for id := range spec.Spec {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	data := make([]uint32, len(ids))
	for i, id := range ids {
		data[i] = spec.Spec[id]
	}
	cids := cslice(&a, ids...)
	cdata := cslice(&a, data...)
	var idp, datap *C.uint32_t
	if len(ids) > 0 {
		idp, datap = (*C.uint32_t)(unsafe.Pointer(&cids[0])), (*C.uint32_t)(unsafe.Pointer(&cdata[0]))
	}
	var cache vk.PipelineCache
	if d.cache != nil {
		cache = d.cache.handle
	}
	var flags uint32
	if d.stats {
		flags |= pipelineCaptureStatistics
	}
	var pipe C.uint64_t
	if err := check("vkCreateComputePipelines", vk.Result(C.deft_create_compute_pipeline(unsafe.Pointer(d.inst.handle),
		unsafe.Pointer(d.handle), handle64(unsafe.Pointer(cache)), C.uint32_t(flags), handle64(unsafe.Pointer(module)),
		handle64(unsafe.Pointer(k.layout)),
		idp, datap, C.uint32_t(len(ids)), &pipe))); err != nil {
		k.destroy()
		return nil, err
	}
	k.pipeline = *(*vk.Pipeline)(unsafe.Pointer(&pipe))
	if d.cache != nil {
		d.cache.dirty = true
	}
	return k, nil
}

func (k *Kernel) destroy() {
	d := k.d
	if k.pipeline != nil {
		vk.DestroyPipeline(d.handle, k.pipeline, nil)
		k.pipeline = nil
	}
	if k.layout != nil {
		vk.DestroyPipelineLayout(d.handle, k.layout, nil)
		k.layout = nil
	}
	if k.setLay != nil {
		vk.DestroyDescriptorSetLayout(d.handle, k.setLay, nil)
		k.setLay = nil
	}
}

// VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR (newer than the binding's headers).
const pipelineCaptureStatistics = 0x40

// KernelStat is one compiler statistic of a kernel as the driver reports it
// (VK_KHR_pipeline_executable_properties): registers, spills, shared memory,
// instruction counts; names and meanings vary by vendor.
type KernelStat struct {
	Name        string  `json:"name"`
	Description string  `json:"description"`
	Value       float64 `json:"value"`
}

// Stats returns the driver's compiler statistics of the kernel, or an error
// when the device does not report them.
func (k *Kernel) Stats() ([]KernelStat, error) {
	if !k.d.stats {
		return nil, fmt.Errorf("kernel %s statistics: device %q lacks VK_KHR_pipeline_executable_properties", k.Name, k.d.Info.Name)
	}
	out := (*[C.DEFT_MAX_STATS]C.deft_stat)(C.malloc(C.size_t(C.DEFT_MAX_STATS) * C.size_t(unsafe.Sizeof(C.deft_stat{}))))
	defer C.free(unsafe.Pointer(out))
	var n C.uint32_t
	if r := C.deft_pipeline_stats(unsafe.Pointer(k.d.inst.handle), unsafe.Pointer(k.d.handle), C.uint64_t(uintptr(unsafe.Pointer(k.pipeline))),
		&out[0], C.DEFT_MAX_STATS, &n); r < 0 {
		return nil, fmt.Errorf("kernel %s statistics: %w", k.Name, check("vkGetPipelineExecutableStatisticsKHR", vk.Result(r)))
	}
	stats := make([]KernelStat, int(n))
	for i := range stats {
		s := &out[i]
		st := KernelStat{Name: C.GoString(&s.name[0]), Description: C.GoString(&s.description[0])}
		switch s.format {
		case 1:
			st.Value = float64(s.i64)
		case 3:
			st.Value = float64(s.f64)
		default:
			st.Value = float64(s.u64)
		}
		stats[i] = st
	}
	return stats, nil
}

package vk

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	vk "github.com/vulkan-go/vulkan"
)

// Device is an open logical device with one compute queue.
type Device struct {
	Info DeviceInfo

	inst         *Instance
	ownsInstance bool
	pd           *physicalDevice
	handle       vk.Device
	queue        vk.Queue
	memProps     vk.PhysicalDeviceMemoryProperties

	queueMu sync.Mutex // vkQueueSubmit needs external synchronisation

	mu       sync.Mutex // guards the maps below and the allocator
	heaps    []*memoryPool
	buffers  map[*Buffer]struct{}
	kernels  map[string]*Kernel
	recs     map[*Recorder]struct{}
	transfer *Recorder // staging copies, under transferMu
	staging  *Buffer

	transferMu sync.Mutex
	cache      *pipelineCache

	coopMat bool
	stats   bool // pipelines capture compiler statistics

	updateDescriptors unsafe.Pointer // vkUpdateDescriptorSets, called through the shim
	fns               C.deft_fns     // recording and submission calls made through the shim

	// FenceTimeout bounds every wait for GPU work.
	FenceTimeout time.Duration
}

// Open creates an instance and opens the selected device (Options.Device,
// $DEFT_DEVICE, or the best one by type). Close releases both.
func Open(opts Options) (*Device, error) {
	inst, err := NewInstance(opts)
	if err != nil {
		return nil, err
	}
	d, err := inst.Open(inst.opts.Device)
	if err != nil {
		inst.Close()
		return nil, err
	}
	d.ownsInstance = true
	return d, nil
}

// SelectDevice picks a device: an index, a case-insensitive name substring
// (the best-ranked match), or, when empty, the best by type.
func SelectDevice(devices []DeviceInfo, sel string) (int, error) {
	if len(devices) == 0 {
		return -1, ErrNoDevice
	}
	sel = strings.TrimSpace(sel)
	have := func() string {
		names := make([]string, len(devices))
		for i, d := range devices {
			names[i] = fmt.Sprintf("%d: %s", d.Index, d.Name)
		}
		return strings.Join(names, "; ")
	}
	if n, err := strconv.Atoi(sel); err == nil {
		if n < 0 || n >= len(devices) {
			return -1, &noMatch{fmt.Sprintf("select device: index %d out of range 0..%d (have %s)", n, len(devices)-1, have())}
		}
		return n, nil
	}
	var cands []DeviceInfo
	for _, d := range devices {
		if sel == "" || strings.Contains(strings.ToLower(d.Name), strings.ToLower(sel)) {
			cands = append(cands, d)
		}
	}
	if len(cands) == 0 {
		return -1, &noMatch{fmt.Sprintf("select device: no device name contains %q (have %s)", sel, have())}
	}
	sort.SliceStable(cands, func(a, b int) bool { return cands[a].Type.rank() < cands[b].Type.rank() })
	return cands[0].Index, nil
}

// noMatch is a selection that matches none of the devices present. It is
// an ErrNoDevice for callers, but its message lists the devices there are
// instead of ending in "no Vulkan device", which misled when one exists.
type noMatch struct{ msg string }

func (e *noMatch) Error() string        { return e.msg }
func (e *noMatch) Is(target error) bool { return target == ErrNoDevice }

// Open opens the device chosen by sel (see SelectDevice).
func (i *Instance) Open(sel string) (*Device, error) {
	idx, err := SelectDevice(i.Devices(), sel)
	if err != nil {
		return nil, err
	}
	pd := i.devices[idx]
	info := pd.info
	if !info.SubgroupInCompute {
		return nil, fmt.Errorf("open device %q: subgroup operations are not supported in compute shaders", info.Name)
	}
	var a arena
	defer a.free()

	exts, err := deviceExtensions(pd.handle)
	if err != nil {
		return nil, fmt.Errorf("open device %q: %w", info.Name, err)
	}
	c := &pd.caps
	var want []string
	api := i.apiVersion
	enable := func(name string, cond bool) {
		if cond && exts[name] {
			want = append(want, name)
		}
	}
	enable("VK_KHR_shader_float16_int8", api < vk.MakeVersion(1, 2, 0))
	enable("VK_KHR_8bit_storage", api < vk.MakeVersion(1, 2, 0))
	enable("VK_KHR_driver_properties", api < vk.MakeVersion(1, 2, 0))
	enable("VK_KHR_vulkan_memory_model", api < vk.MakeVersion(1, 2, 0) && c.vulkan_memory_model != 0)
	enable("VK_EXT_subgroup_size_control", api < vk.MakeVersion(1, 3, 0))
	// Validation layers older than 1.3.255 reject the extension's structures.
	coopmat := c.cooperative_matrix != 0 && (i.layerVersion == 0 || i.layerVersion >= vk.MakeVersion(1, 3, 255))
	enable("VK_KHR_cooperative_matrix", coopmat)
	enable("VK_KHR_portability_subset", true) // required when present
	// Compiler statistics (registers, spills) of every kernel, for tuning.
	enable("VK_KHR_pipeline_executable_properties", true)
	pipelineStats := exts["VK_KHR_pipeline_executable_properties"]

	en := C.deft_enable{
		storage_buffer16: c.storage_buffer16, uniform_storage16: c.uniform_storage16,
		storage_buffer8: c.storage_buffer8,
		shader_float16:  c.shader_float16, shader_int8: c.shader_int8,
		subgroup_size_control: c.subgroup_size_control, compute_full_subgroups: c.compute_full_subgroups,
		cooperative_matrix: cbool(coopmat),
		shader_int64:       cbool(info.ShaderInt64), shader_int16: cbool(info.ShaderInt16),
		pipeline_exec: cbool(pipelineStats),
		// Cooperative-matrix shaders use the Vulkan memory model.
		vulkan_memory_model: c.vulkan_memory_model,
	}
	ext := pd.ext
	ext.coopmat = cbool(coopmat)
	chain := C.deft_features_chain(&ext, &en)
	if chain == nil {
		return nil, fmt.Errorf("open device %q: allocate feature chain", info.Name)
	}
	defer C.deft_free_features_chain(chain)

	queueInfo := vk.DeviceQueueCreateInfo{
		SType:            vk.StructureTypeDeviceQueueCreateInfo,
		QueueFamilyIndex: info.ComputeQueue,
		QueueCount:       1,
		PQueuePriorities: cslice(&a, float32(1)),
	}
	ci := &vk.DeviceCreateInfo{
		SType:                   vk.StructureTypeDeviceCreateInfo,
		PNext:                   chain,
		QueueCreateInfoCount:    1,
		PQueueCreateInfos:       cslice(&a, queueInfo),
		EnabledExtensionCount:   uint32(len(want)),
		PpEnabledExtensionNames: a.strs(want),
	}
	var h vk.Device
	if err := check("vkCreateDevice", vk.CreateDevice(pd.handle, ci, nil, &h)); err != nil {
		return nil, fmt.Errorf("open device %q: %w", info.Name, err)
	}
	d := &Device{
		Info:         info,
		inst:         i,
		pd:           pd,
		handle:       h,
		buffers:      map[*Buffer]struct{}{},
		kernels:      map[string]*Kernel{},
		recs:         map[*Recorder]struct{}{},
		FenceTimeout: 5 * time.Minute,
		coopMat:      coopmat,
		stats:        pipelineStats,
	}
	// Out-parameters are locals: cgo rejects pointers into structs holding Go pointers.
	var queue vk.Queue
	vk.GetDeviceQueue(h, info.ComputeQueue, 0, &queue)
	d.queue = queue
	var memProps vk.PhysicalDeviceMemoryProperties
	vk.GetPhysicalDeviceMemoryProperties(pd.handle, &memProps)
	memProps.Deref()
	d.memProps = memProps
	for k := 0; k < int(d.memProps.MemoryTypeCount); k++ {
		d.memProps.MemoryTypes[k].Deref()
	}
	for k := 0; k < int(d.memProps.MemoryHeapCount); k++ {
		d.memProps.MemoryHeaps[k].Deref()
	}
	d.updateDescriptors = C.deft_update_descriptors_fn(unsafe.Pointer(i.handle), unsafe.Pointer(h))
	C.deft_device_fns(unsafe.Pointer(i.handle), unsafe.Pointer(h), &d.fns)
	if f := &d.fns; d.updateDescriptors == nil || f.barrier == nil || f.copy == nil || f.submit == nil || f.begin == nil ||
		f.alloc_sets == nil || f.bind_pipeline == nil || f.bind_sets == nil || f.push == nil || f.dispatch == nil ||
		f.reset_fences == nil || f.wait_fences == nil {
		d.Close()
		return nil, fmt.Errorf("open device %q: device functions not found", info.Name)
	}
	d.cache = openPipelineCache(d, i.opts.PipelineCacheDir)
	return d, nil
}

// handle64 is a non-dispatchable Vulkan handle as the shim takes it.
func handle64(h unsafe.Pointer) C.uint64_t { return C.uint64_t(uintptr(h)) }

// Close waits for the device, releases every object created from it and,
// when Open created it, the instance.
func (d *Device) Close() error {
	if d == nil || d.handle == nil {
		return nil
	}
	vk.DeviceWaitIdle(d.handle)
	d.mu.Lock()
	recs := make([]*Recorder, 0, len(d.recs))
	for r := range d.recs {
		recs = append(recs, r)
	}
	bufs := make([]*Buffer, 0, len(d.buffers))
	for b := range d.buffers {
		bufs = append(bufs, b)
	}
	kernels := make([]*Kernel, 0, len(d.kernels))
	for _, k := range d.kernels {
		kernels = append(kernels, k)
	}
	d.mu.Unlock()
	for _, r := range recs {
		r.Close()
	}
	for _, b := range bufs {
		b.Close()
	}
	for _, k := range kernels {
		k.destroy()
	}
	var err error
	if d.cache != nil {
		err = d.cache.close()
	}
	d.mu.Lock()
	for _, p := range d.heaps {
		p.destroy(d)
	}
	d.heaps = nil
	d.mu.Unlock()
	vk.DestroyDevice(d.handle, nil)
	d.handle = nil
	if d.ownsInstance {
		d.inst.Close()
	}
	return err
}

// CooperativeMatrix reports whether VK_KHR_cooperative_matrix is enabled
// (supported, and not hidden from a validation layer too old to know it).
func (d *Device) CooperativeMatrix() bool { return d.coopMat }

// KernelStats reports whether kernels carry the driver's compiler
// statistics (VK_KHR_pipeline_executable_properties; see Kernel.Stats).
func (d *Device) KernelStats() bool { return d.stats }

// Instance returns the instance the device came from.
func (d *Device) Instance() *Instance { return d.inst }

// WaitIdle waits until the device has finished all work.
func (d *Device) WaitIdle() error {
	d.queueMu.Lock()
	defer d.queueMu.Unlock()
	return check("vkDeviceWaitIdle", vk.DeviceWaitIdle(d.handle))
}

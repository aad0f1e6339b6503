package vk

/*
#include "shim.h"
*/
import "C"

import (
	"encoding/hex"
	"fmt"
	"unsafe"

	vk "github.com/vulkan-go/vulkan"
)

// DeviceType is Vulkan's physical device type.
type DeviceType string

// Device types, in default selection order.
const (
	TypeDiscrete   DeviceType = "discrete"
	TypeIntegrated DeviceType = "integrated"
	TypeVirtual    DeviceType = "virtual"
	TypeCPU        DeviceType = "cpu"
	TypeOther      DeviceType = "other"
)

func (t DeviceType) rank() int {
	switch t {
	case TypeDiscrete:
		return 0
	case TypeIntegrated:
		return 1
	case TypeVirtual:
		return 2
	case TypeCPU:
		return 3
	}
	return 4
}

// MemoryHeap is one of the device's memory heaps.
type MemoryHeap struct {
	Size        uint64 `json:"size"`
	DeviceLocal bool   `json:"device_local"`
}

// CoopMatShape is one cooperative-matrix configuration (VK_KHR_cooperative_matrix).
type CoopMatShape struct {
	M, N, K    uint32
	A, B, C, R string // component types
	Saturating bool   `json:",omitempty"`
	Scope      string
}

func (c CoopMatShape) String() string {
	return fmt.Sprintf("%dx%dx%d %s*%s+%s->%s (%s)", c.M, c.N, c.K, c.A, c.B, c.C, c.R, c.Scope)
}

// DeviceInfo describes a physical device: what `deft devices` prints.
type DeviceInfo struct {
	Index         int        `json:"index"`
	Name          string     `json:"name"`
	Type          DeviceType `json:"type"`
	VendorID      uint32     `json:"vendor_id"`
	DeviceID      uint32     `json:"device_id"`
	APIVersion    string     `json:"api_version"`
	DriverVersion uint32     `json:"driver_version"`
	DriverName    string     `json:"driver_name,omitempty"`
	DriverInfo    string     `json:"driver_info,omitempty"`
	UUID          string     `json:"uuid"`

	SubgroupSize         uint32         `json:"subgroup_size"`
	MinSubgroupSize      uint32         `json:"min_subgroup_size,omitempty"`
	MaxSubgroupSize      uint32         `json:"max_subgroup_size,omitempty"`
	SubgroupOps          []string       `json:"subgroup_ops"`
	SubgroupInCompute    bool           `json:"subgroup_in_compute"`
	SubgroupSizeControl  bool           `json:"subgroup_size_control"`
	ComputeFullSubgroups bool           `json:"compute_full_subgroups"`
	Storage16Bit         bool           `json:"storage_buffer_16bit"`
	Storage8Bit          bool           `json:"storage_buffer_8bit"`
	ShaderFloat16        bool           `json:"shader_float16"`
	ShaderInt8           bool           `json:"shader_int8"`
	ShaderInt16          bool           `json:"shader_int16"`
	ShaderInt64          bool           `json:"shader_int64"`
	CooperativeMatrix    bool           `json:"cooperative_matrix"`
	CoopMatShapes        []CoopMatShape `json:"cooperative_matrix_shapes,omitempty"`
	VulkanMemoryModel    bool           `json:"vulkan_memory_model"`

	MaxSharedMemory       uint32    `json:"max_shared_memory"`
	MaxWorkgroupSize      [3]uint32 `json:"max_workgroup_size"`
	MaxWorkgroupInvocs    uint32    `json:"max_workgroup_invocations"`
	MaxWorkgroupCount     [3]uint32 `json:"max_workgroup_count"`
	MaxStorageBufferRange uint32    `json:"max_storage_buffer_range"`
	MaxPushConstants      uint32    `json:"max_push_constants"`
	MaxAllocations        uint32    `json:"max_memory_allocations"`
	MinStorageAlignment   uint64    `json:"min_storage_buffer_offset_alignment"`
	NonCoherentAtomSize   uint64    `json:"non_coherent_atom_size"`

	Timestamps      bool         `json:"timestamps"`
	TimestampPeriod float64      `json:"timestamp_period_ns"`
	TimestampBits   uint32       `json:"timestamp_valid_bits"`
	ComputeQueue    uint32       `json:"compute_queue_family"`
	MemoryHeaps     []MemoryHeap `json:"memory_heaps"`
	UnifiedMemory   bool         `json:"unified_memory"`
	Extensions      int          `json:"extension_count"`
}

var subgroupOpNames = []string{"basic", "vote", "arithmetic", "ballot", "shuffle", "shuffle_relative", "clustered", "quad"}

func componentType(t uint32) string {
	names := []string{"f16", "f32", "f64", "s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64"}
	if int(t) < len(names) {
		return names[t]
	}
	if t == 1000141000 {
		return "bf16"
	}
	return fmt.Sprintf("type%d", t)
}

func scopeName(s uint32) string {
	switch s {
	case 1:
		return "device"
	case 2:
		return "workgroup"
	case 3:
		return "subgroup"
	case 5:
		return "queue_family"
	}
	return fmt.Sprintf("scope%d", s)
}

func (i *Instance) enumerate() error {
	var n uint32
	if err := check("vkEnumeratePhysicalDevices", vk.EnumeratePhysicalDevices(i.handle, &n, nil)); err != nil {
		return fmt.Errorf("enumerate devices: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("enumerate devices: %w found; install a driver: apt-get install mesa-vulkan-drivers (CPU, AMD, Intel) or the NVIDIA driver", ErrNoDevice)
	}
	handles := make([]vk.PhysicalDevice, n)
	if err := check("vkEnumeratePhysicalDevices", vk.EnumeratePhysicalDevices(i.handle, &n, handles)); err != nil {
		return fmt.Errorf("enumerate devices: %w", err)
	}
	for k, h := range handles[:n] {
		pd, err := i.describe(k, h)
		if err != nil {
			return fmt.Errorf("describe device %d: %w", k, err)
		}
		i.devices = append(i.devices, pd)
	}
	return nil
}

func (i *Instance) describe(index int, h vk.PhysicalDevice) (*physicalDevice, error) {
	var props vk.PhysicalDeviceProperties
	vk.GetPhysicalDeviceProperties(h, &props)
	props.Deref()
	props.Limits.Deref()
	var feats vk.PhysicalDeviceFeatures
	vk.GetPhysicalDeviceFeatures(h, &feats)
	feats.Deref()
	var mem vk.PhysicalDeviceMemoryProperties
	vk.GetPhysicalDeviceMemoryProperties(h, &mem)
	mem.Deref()
	exts, err := deviceExtensions(h)
	if err != nil {
		return nil, err
	}
	api := props.ApiVersion
	if api > i.apiVersion {
		api = i.apiVersion // the instance caps what may be used
	}
	pd := &physicalDevice{handle: h, cacheUUID: props.PipelineCacheUUID}
	v12 := api >= vk.MakeVersion(1, 2, 0)
	v13 := api >= vk.MakeVersion(1, 3, 0)
	pd.ext.driver_props = cbool(v12 || exts["VK_KHR_driver_properties"])
	pd.ext.float16_int8 = cbool(v12 || exts["VK_KHR_shader_float16_int8"])
	pd.ext.storage8 = cbool(v12 || exts["VK_KHR_8bit_storage"])
	pd.ext.size_control = cbool(v13 || exts["VK_EXT_subgroup_size_control"])
	pd.ext.coopmat = cbool(exts["VK_KHR_cooperative_matrix"])
	pd.ext.pipeline_exec = cbool(exts["VK_KHR_pipeline_executable_properties"])
	pd.ext.memory_model = cbool(v12 || exts["VK_KHR_vulkan_memory_model"])
	if r := C.deft_query_caps(unsafe.Pointer(i.handle), unsafe.Pointer(h), &pd.ext, &pd.caps); r != 0 {
		return nil, fmt.Errorf("query Vulkan 1.1 properties: shim error %d (device supports %s)", int(r), versionString(props.ApiVersion))
	}
	c := &pd.caps
	lim := props.Limits
	info := DeviceInfo{
		Index:                 index,
		Name:                  cstr(props.DeviceName[:]),
		VendorID:              props.VendorID,
		DeviceID:              props.DeviceID,
		APIVersion:            versionString(props.ApiVersion),
		DriverVersion:         props.DriverVersion,
		UUID:                  hex.EncodeToString(C.GoBytes(unsafe.Pointer(&c.device_uuid[0]), 16)),
		SubgroupSize:          uint32(c.subgroup_size),
		SubgroupInCompute:     c.subgroup_stages&C.uint32_t(vk.ShaderStageComputeBit) != 0,
		SubgroupSizeControl:   c.subgroup_size_control != 0,
		ComputeFullSubgroups:  c.compute_full_subgroups != 0,
		Storage16Bit:          c.storage_buffer16 != 0,
		Storage8Bit:           c.storage_buffer8 != 0,
		ShaderFloat16:         c.shader_float16 != 0,
		ShaderInt8:            c.shader_int8 != 0,
		ShaderInt16:           feats.ShaderInt16 != 0,
		ShaderInt64:           feats.ShaderInt64 != 0,
		CooperativeMatrix:     c.cooperative_matrix != 0,
		VulkanMemoryModel:     c.vulkan_memory_model != 0,
		MaxSharedMemory:       lim.MaxComputeSharedMemorySize,
		MaxWorkgroupSize:      lim.MaxComputeWorkGroupSize,
		MaxWorkgroupInvocs:    lim.MaxComputeWorkGroupInvocations,
		MaxWorkgroupCount:     lim.MaxComputeWorkGroupCount,
		MaxStorageBufferRange: lim.MaxStorageBufferRange,
		MaxPushConstants:      lim.MaxPushConstantsSize,
		MaxAllocations:        lim.MaxMemoryAllocationCount,
		MinStorageAlignment:   uint64(lim.MinStorageBufferOffsetAlignment),
		NonCoherentAtomSize:   uint64(lim.NonCoherentAtomSize),
		TimestampPeriod:       float64(lim.TimestampPeriod),
		Extensions:            len(exts),
	}
	switch props.DeviceType {
	case vk.PhysicalDeviceTypeDiscreteGpu:
		info.Type = TypeDiscrete
	case vk.PhysicalDeviceTypeIntegratedGpu:
		info.Type = TypeIntegrated
	case vk.PhysicalDeviceTypeVirtualGpu:
		info.Type = TypeVirtual
	case vk.PhysicalDeviceTypeCpu:
		info.Type = TypeCPU
	default:
		info.Type = TypeOther
	}
	if c.has_driver_props != 0 {
		info.DriverName = C.GoString(&c.driver_name[0])
		info.DriverInfo = C.GoString(&c.driver_info[0])
	}
	if c.has_size_control_props != 0 {
		info.MinSubgroupSize = uint32(c.min_subgroup_size)
		info.MaxSubgroupSize = uint32(c.max_subgroup_size)
	}
	for b, name := range subgroupOpNames {
		if uint32(c.subgroup_ops)&(1<<b) != 0 {
			info.SubgroupOps = append(info.SubgroupOps, name)
		}
	}
	for k := 0; k < int(c.coopmat_count); k++ {
		m := c.coopmat[k]
		info.CoopMatShapes = append(info.CoopMatShapes, CoopMatShape{
			M: uint32(m.m), N: uint32(m.n), K: uint32(m.k),
			A: componentType(uint32(m.a_type)), B: componentType(uint32(m.b_type)),
			C: componentType(uint32(m.c_type)), R: componentType(uint32(m.result_type)),
			Saturating: m.saturating != 0, Scope: scopeName(uint32(m.scope)),
		})
	}
	allLocalHostVisible := true
	for k := 0; k < int(mem.MemoryHeapCount); k++ {
		hp := mem.MemoryHeaps[k]
		hp.Deref()
		info.MemoryHeaps = append(info.MemoryHeaps, MemoryHeap{Size: uint64(hp.Size), DeviceLocal: hp.Flags&vk.MemoryHeapFlags(vk.MemoryHeapDeviceLocalBit) != 0})
	}
	for k := 0; k < int(mem.MemoryTypeCount); k++ {
		mt := mem.MemoryTypes[k]
		mt.Deref()
		f := vk.MemoryPropertyFlagBits(mt.PropertyFlags)
		if f&vk.MemoryPropertyDeviceLocalBit != 0 && f&vk.MemoryPropertyHostVisibleBit == 0 {
			allLocalHostVisible = false
		}
	}
	info.UnifiedMemory = allLocalHostVisible || info.Type == TypeCPU || info.Type == TypeIntegrated

	// The compute queue: prefer a family with compute and timestamps.
	var qn uint32
	vk.GetPhysicalDeviceQueueFamilyProperties(h, &qn, nil)
	qprops := make([]vk.QueueFamilyProperties, qn)
	vk.GetPhysicalDeviceQueueFamilyProperties(h, &qn, qprops)
	found := false
	for k := range qprops[:qn] {
		q := qprops[k]
		q.Deref()
		if vk.QueueFlagBits(q.QueueFlags)&vk.QueueComputeBit == 0 {
			continue
		}
		if !found || (info.TimestampBits == 0 && q.TimestampValidBits > 0) {
			info.ComputeQueue = uint32(k)
			info.TimestampBits = q.TimestampValidBits
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("device %q has no compute queue", info.Name)
	}
	info.Timestamps = info.TimestampBits > 0 && info.TimestampPeriod > 0
	pd.info = info
	return pd, nil
}

func cbool(b bool) C.uint32_t {
	if b {
		return 1
	}
	return 0
}

package vk

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"unsafe"

	vk "github.com/vulkan-go/vulkan"
)

// Options configure instance creation and device selection.
type Options struct {
	// Library is the Vulkan loader to dlopen; default $DEFT_VULKAN_LIBRARY or libvulkan.so.1.
	Library string
	// Device selects a device by index or by a case-insensitive name substring;
	// default $DEFT_DEVICE, else the best by type (discrete > integrated > virtual > CPU).
	Device string
	// Validation enables VK_LAYER_KHRONOS_validation and collects its messages;
	// also enabled by DEFT_VALIDATION=1.
	Validation bool
	// PipelineCacheDir overrides where compiled pipelines are cached; "-" disables it.
	PipelineCacheDir string
}

func (o Options) withEnv() Options {
	if o.Library == "" {
		o.Library = os.Getenv("DEFT_VULKAN_LIBRARY")
	}
	if o.Library == "" {
		o.Library = "libvulkan.so.1"
	}
	if o.Device == "" {
		o.Device = os.Getenv("DEFT_DEVICE")
	}
	if v := os.Getenv("DEFT_VALIDATION"); v != "" && v != "0" {
		o.Validation = true
	}
	return o
}

const validationLayer = "VK_LAYER_KHRONOS_validation"

var loadOnce struct {
	sync.Mutex
	path string
	err  error
	done bool
}

// load dlopens the Vulkan loader once per process and hands its
// vkGetInstanceProcAddr to the binding.
func load(path string) error {
	loadOnce.Lock()
	defer loadOnce.Unlock()
	if loadOnce.done {
		if path != loadOnce.path {
			return fmt.Errorf("load Vulkan: %s already loaded, cannot switch to %s", loadOnce.path, path)
		}
		return loadOnce.err
	}
	loadOnce.done, loadOnce.path = true, path
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var errbuf [512]C.char
	gipa := C.deft_load_vulkan(cpath, &errbuf[0], C.size_t(len(errbuf)))
	if gipa == nil {
		loadOnce.err = fmt.Errorf("load Vulkan loader %s: %s; install it with `apt-get install libvulkan1` "+
			"(and a driver: mesa-vulkan-drivers for CPU/AMD/Intel, the vendor driver for NVIDIA), "+
			"or point DEFT_VULKAN_LIBRARY at it", path, C.GoString(&errbuf[0]))
		return loadOnce.err
	}
	vk.SetGetInstanceProcAddr(gipa)
	if err := vk.Init(); err != nil {
		loadOnce.err = fmt.Errorf("initialise Vulkan binding: %w", err)
	}
	return loadOnce.err
}

// Instance is a Vulkan instance with the physical devices it sees.
type Instance struct {
	handle     vk.Instance
	messenger  unsafe.Pointer
	apiVersion uint32
	// layerVersion is the validation layer's spec version when enabled.
	layerVersion uint32
	opts         Options
	devices      []*physicalDevice
}

type physicalDevice struct {
	handle vk.PhysicalDevice
	info   DeviceInfo
	ext    C.deft_ext
	// cacheUUID identifies pipeline-cache compatibility.
	cacheUUID [16]byte
	caps      C.deft_caps
}

// NewInstance loads Vulkan and creates an instance.
func NewInstance(opts Options) (*Instance, error) {
	opts = opts.withEnv()
	if err := load(opts.Library); err != nil {
		return nil, err
	}
	loaderVersion := uint32(C.deft_instance_version())
	api := vk.MakeVersion(1, 3, 0)
	if loaderVersion < api {
		api = loaderVersion
	}
	if api < vk.MakeVersion(1, 1, 0) {
		return nil, fmt.Errorf("create instance: the Vulkan loader supports only %s; DeFT-VK needs 1.1 or newer (upgrade libvulkan1)", versionString(loaderVersion))
	}

	inst := &Instance{apiVersion: api, opts: opts}
	var a arena
	defer a.free()
	var layers, exts []string
	var pNext unsafe.Pointer
	if opts.Validation {
		inst.layerVersion = instanceLayerVersion(validationLayer)
		if inst.layerVersion == 0 {
			return nil, fmt.Errorf("create instance: validation requested but %s is not installed (apt-get install vulkan-validationlayers)", validationLayer)
		}
		layers = append(layers, validationLayer)
		exts = append(exts, "VK_EXT_debug_utils")
		pNext = C.deft_messenger_create_info() // also catches messages from instance creation
	}
	if hasInstanceExtension("VK_KHR_portability_enumeration") {
		exts = append(exts, "VK_KHR_portability_enumeration")
	}
	appInfo := &vk.ApplicationInfo{
		SType:            vk.StructureTypeApplicationInfo,
		PApplicationName: a.str("deft-vk"),
		PEngineName:      a.str("deft-vk"),
		ApiVersion:       api,
	}
	ci := &vk.InstanceCreateInfo{
		SType:                   vk.StructureTypeInstanceCreateInfo,
		PNext:                   pNext,
		PApplicationInfo:        appInfo,
		EnabledLayerCount:       uint32(len(layers)),
		PpEnabledLayerNames:     a.strs(layers),
		EnabledExtensionCount:   uint32(len(exts)),
		PpEnabledExtensionNames: a.strs(exts),
	}
	for _, e := range exts {
		if e == "VK_KHR_portability_enumeration" {
			ci.Flags = 0x00000001 // VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR
		}
	}
	var h vk.Instance
	if r := vk.CreateInstance(ci, nil, &h); r != vk.Success {
		err := check("vkCreateInstance", r)
		if r == vk.ErrorIncompatibleDriver {
			return nil, fmt.Errorf("create instance: no Vulkan driver found (%w); install one: "+
				"apt-get install mesa-vulkan-drivers (CPU, AMD, Intel) or the NVIDIA driver: %w", ErrNoDevice, err)
		}
		return nil, fmt.Errorf("create instance: %w", err)
	}
	live.Lock()
	err := vk.InitInstance(h)
	if err == nil {
		live.handles = append(live.handles, h)
	}
	live.Unlock()
	if err != nil {
		vk.DestroyInstance(h, nil)
		return nil, fmt.Errorf("load instance functions: %w", err)
	}
	inst.handle = h
	if opts.Validation {
		var m unsafe.Pointer
		if r := C.deft_create_messenger(unsafe.Pointer(h), &m); r != 0 {
			inst.Close()
			return nil, fmt.Errorf("create debug messenger: VkResult %d", int(r))
		}
		inst.messenger = m
	}
	if err := inst.enumerate(); err != nil {
		inst.Close()
		return nil, err
	}
	return inst, nil
}

// Close destroys the instance. Devices opened from it must be closed first.
func (i *Instance) Close() {
	if i == nil || i.handle == nil {
		return
	}
	if i.messenger != nil {
		C.deft_destroy_messenger(unsafe.Pointer(i.handle), i.messenger)
		i.messenger = nil
	}
	vk.DestroyInstance(i.handle, nil)
	// The binding resolves its function pointers through the instance last
	// initialised: once that one is gone, point them at a live instance,
	// so that a process holding several (tests that run commands beside a
	// shared device) never calls through a destroyed instance's layers.
	live.Lock()
	if k := slices.Index(live.handles, i.handle); k >= 0 {
		live.handles = slices.Delete(live.handles, k, k+1)
	}
	if n := len(live.handles); n > 0 {
		_ = vk.InitInstance(live.handles[n-1]) // it succeeded for that instance before
	}
	live.Unlock()
	i.handle = nil
}

// live lists the instances not yet destroyed, most recent last.
var live struct {
	sync.Mutex
	handles []vk.Instance
}

// Devices describes every physical device, in the loader's order.
func (i *Instance) Devices() []DeviceInfo {
	out := make([]DeviceInfo, len(i.devices))
	for k, d := range i.devices {
		out[k] = d.info
	}
	return out
}

// ValidationMessages drains the validation layer's warnings and errors
// collected so far (process-wide).
func ValidationMessages() []string {
	var out []string
	buf := make([]C.char, 2048)
	for C.deft_take_message(&buf[0], C.size_t(len(buf))) != 0 {
		out = append(out, C.GoString(&buf[0]))
	}
	if d := C.deft_dropped_messages(); d > 0 {
		out = append(out, fmt.Sprintf("[error] %d further validation messages dropped", d))
	}
	return out
}

// instanceLayerVersion returns the spec version of an installed layer, 0 when absent.
func instanceLayerVersion(name string) uint32 {
	var n uint32
	if vk.EnumerateInstanceLayerProperties(&n, nil) != vk.Success || n == 0 {
		return 0
	}
	props := make([]vk.LayerProperties, n)
	if vk.EnumerateInstanceLayerProperties(&n, props) != vk.Success {
		return 0
	}
	for _, p := range props[:n] {
		p.Deref()
		if cstr(p.LayerName[:]) == name {
			return max(p.SpecVersion, 1)
		}
	}
	return 0
}

func hasInstanceExtension(name string) bool {
	var n uint32
	if vk.EnumerateInstanceExtensionProperties("", &n, nil) != vk.Success || n == 0 {
		return false
	}
	props := make([]vk.ExtensionProperties, n)
	if vk.EnumerateInstanceExtensionProperties("", &n, props) != vk.Success {
		return false
	}
	for _, p := range props[:n] {
		p.Deref()
		if cstr(p.ExtensionName[:]) == name {
			return true
		}
	}
	return false
}

func deviceExtensions(pd vk.PhysicalDevice) (map[string]bool, error) {
	var n uint32
	if err := check("vkEnumerateDeviceExtensionProperties", vk.EnumerateDeviceExtensionProperties(pd, "", &n, nil)); err != nil {
		return nil, err
	}
	props := make([]vk.ExtensionProperties, n)
	if n > 0 {
		if err := check("vkEnumerateDeviceExtensionProperties", vk.EnumerateDeviceExtensionProperties(pd, "", &n, props)); err != nil {
			return nil, err
		}
	}
	out := make(map[string]bool, n)
	for _, p := range props[:n] {
		p.Deref()
		out[cstr(p.ExtensionName[:])] = true
	}
	return out, nil
}

// cstr reads a NUL-terminated fixed-size C string field.
func cstr(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

func versionString(v uint32) string {
	return fmt.Sprintf("%d.%d.%d", v>>22, (v>>12)&0x3ff, v&0xfff)
}

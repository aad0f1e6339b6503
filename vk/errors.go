package vk

import (
	"errors"
	"fmt"

	vk "github.com/vulkan-go/vulkan"
)

// Distinct failures callers may want to handle.
var (
	// ErrOutOfDeviceMemory: the device (or host memory backing it) is full.
	ErrOutOfDeviceMemory = errors.New("out of device memory")
	// ErrDeviceLost: the device stopped working (a hang, a crash, a reset); the Device must be closed.
	ErrDeviceLost = errors.New("device lost")
	// ErrNoDevice: no Vulkan device matched.
	ErrNoDevice = errors.New("no Vulkan device")
	// ErrTimeout: a wait ran out of time.
	ErrTimeout = errors.New("timed out")
)

// Error is a failed Vulkan call.
type Error struct {
	Op     string
	Result vk.Result
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s (VkResult %d)", e.Op, resultName(e.Result), int32(e.Result))
}

// Unwrap maps results that callers distinguish onto sentinel errors.
func (e *Error) Unwrap() error {
	switch e.Result {
	case vk.ErrorOutOfDeviceMemory, vk.ErrorOutOfHostMemory:
		return ErrOutOfDeviceMemory
	case vk.ErrorDeviceLost:
		return ErrDeviceLost
	case vk.Timeout:
		return ErrTimeout
	}
	return nil
}

// check turns a VkResult into an error naming the operation.
func check(op string, r vk.Result) error {
	if r == vk.Success {
		return nil
	}
	return &Error{Op: op, Result: r}
}

func resultName(r vk.Result) string {
	switch r {
	case vk.Success:
		return "VK_SUCCESS"
	case vk.NotReady:
		return "VK_NOT_READY"
	case vk.Timeout:
		return "VK_TIMEOUT"
	case vk.Incomplete:
		return "VK_INCOMPLETE"
	case vk.ErrorOutOfHostMemory:
		return "VK_ERROR_OUT_OF_HOST_MEMORY"
	case vk.ErrorOutOfDeviceMemory:
		return "VK_ERROR_OUT_OF_DEVICE_MEMORY"
	case vk.ErrorInitializationFailed:
		return "VK_ERROR_INITIALIZATION_FAILED"
	case vk.ErrorDeviceLost:
		return "VK_ERROR_DEVICE_LOST"
	case vk.ErrorMemoryMapFailed:
		return "VK_ERROR_MEMORY_MAP_FAILED"
	case vk.ErrorLayerNotPresent:
		return "VK_ERROR_LAYER_NOT_PRESENT"
	case vk.ErrorExtensionNotPresent:
		return "VK_ERROR_EXTENSION_NOT_PRESENT"
	case vk.ErrorFeatureNotPresent:
		return "VK_ERROR_FEATURE_NOT_PRESENT"
	case vk.ErrorIncompatibleDriver:
		return "VK_ERROR_INCOMPATIBLE_DRIVER"
	case vk.ErrorTooManyObjects:
		return "VK_ERROR_TOO_MANY_OBJECTS"
	case vk.ErrorFormatNotSupported:
		return "VK_ERROR_FORMAT_NOT_SUPPORTED"
	case vk.ErrorFragmentedPool:
		return "VK_ERROR_FRAGMENTED_POOL"
	case vk.ErrorOutOfPoolMemory:
		return "VK_ERROR_OUT_OF_POOL_MEMORY"
	case vk.ErrorInvalidShaderNv:
		return "VK_ERROR_INVALID_SHADER_NV"
	}
	return "VkResult"
}

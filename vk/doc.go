// Package vk is DeFT-VK's thin Vulkan compute runtime: it loads libvulkan,
// describes and selects devices, allocates buffers, builds compute pipelines
// from embedded SPIR-V and records dispatches with the barriers they need.
//
// It sits on github.com/vulkan-go/vulkan for Vulkan 1.0 entry points and on a
// small cgo shim of its own (shim.c) for 1.1+ queries. The binding stores the
// data pointers of slices and strings in C structures, so every array handed
// to Vulkan here lives in C memory owned by this package (see arena).
package vk

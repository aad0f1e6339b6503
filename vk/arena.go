package vk

/*
#include <stdlib.h>
#include <string.h>
*/
import "C"

import "unsafe"

// arena owns C memory for the arrays and strings of one Vulkan call. The
// binding copies structures into C memory but stores slice and string data
// pointers as they are; pointing them at Go memory breaks cgo's pointer rules
// (cgocheck2) and races its finalizers. Free after the call returns.
//
// Arrays of structures nested in a create info are worse: the binding
// copies them into memory that a finalizer frees whenever the collector
// runs, which can be during the call. Calls that need them (layouts,
// pipelines, descriptor pools and writes) are built in C by the shim.
type arena struct {
	ptrs []unsafe.Pointer
}

func (a *arena) alloc(n int) unsafe.Pointer {
	if n <= 0 {
		n = 1
	}
	p := C.calloc(C.size_t(n), 1)
	if p == nil {
		panic("vk: C allocation failed")
	}
	a.ptrs = append(a.ptrs, p)
	return p
}

func (a *arena) free() {
	for _, p := range a.ptrs {
		C.free(p)
	}
	a.ptrs = nil
}

// str returns a NUL-terminated string whose bytes live in C memory.
func (a *arena) str(s string) string {
	p := a.alloc(len(s) + 1)
	b := unsafe.Slice((*byte)(p), len(s)+1)
	copy(b, s)
	b[len(s)] = 0
	return unsafe.String((*byte)(p), len(s)+1)
}

func (a *arena) strs(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = a.str(s)
	}
	return out
}

// cslice copies vals into C memory and returns a slice over it.
func cslice[T any](a *arena, vals ...T) []T {
	if len(vals) == 0 {
		return nil
	}
	var zero T
	p := a.alloc(len(vals) * int(unsafe.Sizeof(zero)))
	s := unsafe.Slice((*T)(p), len(vals))
	copy(s, vals)
	return s
}

// cbytes copies b into C memory.
func (a *arena) cbytes(b []byte) unsafe.Pointer {
	p := a.alloc(len(b))
	if len(b) > 0 {
		C.memcpy(p, unsafe.Pointer(&b[0]), C.size_t(len(b)))
	}
	return p
}

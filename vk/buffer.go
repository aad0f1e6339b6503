package vk

/*
#include <string.h>
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	vk "github.com/vulkan-go/vulkan"
)

// Buffer is a storage buffer. Device-local buffers are filled and read
// through a staging buffer; on unified-memory and CPU devices the device
// memory is host-visible and is mapped directly.
type Buffer struct {
	d      *Device
	handle vk.Buffer
	size   uint64 // requested size; the VkBuffer is at least 4 bytes
	alloc  allocation
	ptr    unsafe.Pointer // host mapping, nil when not host-visible
}

// BufferKind says where a buffer lives.
type BufferKind int

const (
	// DeviceLocal is fastest for kernels; host access goes through staging
	// unless the device has unified memory.
	DeviceLocal BufferKind = iota
	// HostVisible is mapped memory in system RAM (staging, readbacks).
	HostVisible
)

// NewBuffer creates a device-local storage buffer of size bytes (0 allowed).
func (d *Device) NewBuffer(size uint64) (*Buffer, error) {
	return d.newBuffer(size, DeviceLocal)
}

// NewHostBuffer creates a host-visible, coherent storage buffer.
func (d *Device) NewHostBuffer(size uint64) (*Buffer, error) {
	return d.newBuffer(size, HostVisible)
}

func (d *Device) newBuffer(size uint64, kind BufferKind) (*Buffer, error) {
	real := alignUp(max(size, 4), 4)
	var a arena
	defer a.free()
	info := &vk.BufferCreateInfo{
		SType: vk.StructureTypeBufferCreateInfo,
		Size:  vk.DeviceSize(real),
		Usage: vk.BufferUsageFlags(vk.BufferUsageStorageBufferBit | vk.BufferUsageTransferSrcBit | vk.BufferUsageTransferDstBit),
	}
	var h vk.Buffer
	if err := check("vkCreateBuffer", vk.CreateBuffer(d.handle, info, nil, &h)); err != nil {
		return nil, fmt.Errorf("create buffer of %d bytes: %w", size, err)
	}
	var req vk.MemoryRequirements
	vk.GetBufferMemoryRequirements(d.handle, h, &req)
	req.Deref()
	var typ uint32
	var ok bool
	switch {
	case kind == HostVisible:
		typ, ok = d.memoryType(req.MemoryTypeBits, vk.MemoryPropertyHostVisibleBit|vk.MemoryPropertyHostCoherentBit, vk.MemoryPropertyHostCachedBit)
	case d.Info.UnifiedMemory:
		typ, ok = d.memoryType(req.MemoryTypeBits, vk.MemoryPropertyDeviceLocalBit|vk.MemoryPropertyHostVisibleBit|vk.MemoryPropertyHostCoherentBit, vk.MemoryPropertyHostCachedBit)
		if !ok {
			typ, ok = d.memoryType(req.MemoryTypeBits, vk.MemoryPropertyDeviceLocalBit, 0)
		}
	default:
		typ, ok = d.memoryType(req.MemoryTypeBits, vk.MemoryPropertyDeviceLocalBit, 0)
	}
	if !ok {
		typ, ok = d.memoryType(req.MemoryTypeBits, 0, 0)
	}
	if !ok {
		vk.DestroyBuffer(d.handle, h, nil)
		return nil, fmt.Errorf("create buffer of %d bytes: no usable memory type (bits %#x)", size, req.MemoryTypeBits)
	}
	align := max(uint64(req.Alignment), d.Info.MinStorageAlignment, d.Info.NonCoherentAtomSize, 16)
	d.mu.Lock()
	p := d.pool(typ)
	al, err := p.allocate(d, uint64(req.Size), align)
	d.mu.Unlock()
	if err != nil {
		vk.DestroyBuffer(d.handle, h, nil)
		return nil, fmt.Errorf("create buffer of %d bytes: %w", size, err)
	}
	if err := check("vkBindBufferMemory", vk.BindBufferMemory(d.handle, h, al.block.mem, vk.DeviceSize(al.offset))); err != nil {
		d.mu.Lock()
		p.release(d, al)
		d.mu.Unlock()
		vk.DestroyBuffer(d.handle, h, nil)
		return nil, fmt.Errorf("create buffer of %d bytes: %w", size, err)
	}
	b := &Buffer{d: d, handle: h, size: size, alloc: al}
	if al.block.ptr != nil {
		b.ptr = unsafe.Add(al.block.ptr, al.offset)
	}
	d.mu.Lock()
	d.buffers[b] = struct{}{}
	d.mu.Unlock()
	return b, nil
}

// Size is the buffer's size in bytes as requested.
func (b *Buffer) Size() uint64 { return b.size }

// HostVisible reports whether the buffer is mapped for direct host access.
func (b *Buffer) HostVisible() bool { return b.ptr != nil }

// Close frees the buffer; the device must not be using it.
func (b *Buffer) Close() {
	if b == nil || b.handle == nil {
		return
	}
	d := b.d
	vk.DestroyBuffer(d.handle, b.handle, nil)
	d.mu.Lock()
	b.alloc.pool.release(d, b.alloc)
	delete(d.buffers, b)
	d.mu.Unlock()
	b.handle = nil
	b.ptr = nil
}

func (b *Buffer) checkRange(op string, off, n uint64) error {
	if b.handle == nil {
		return fmt.Errorf("%s: buffer is closed", op)
	}
	if off > b.size || n > b.size-off {
		return fmt.Errorf("%s: range [%d, %d) outside buffer of %d bytes", op, off, off+n, b.size)
	}
	return nil
}

// Write copies data into the buffer at byte offset off.
func (b *Buffer) Write(off uint64, data []byte) error {
	if err := b.checkRange("write buffer", off, uint64(len(data))); err != nil {
		return err
	}
	if len(data) == 0 {
		return nil
	}
	if b.ptr != nil {
		C.memcpy(unsafe.Add(b.ptr, off), unsafe.Pointer(&data[0]), C.size_t(len(data)))
		return nil
	}
	return b.d.stage(b, off, data, true)
}

// Read copies len(out) bytes from byte offset off into out.
func (b *Buffer) Read(off uint64, out []byte) error {
	if err := b.checkRange("read buffer", off, uint64(len(out))); err != nil {
		return err
	}
	if len(out) == 0 {
		return nil
	}
	if b.ptr != nil {
		C.memcpy(unsafe.Pointer(&out[0]), unsafe.Add(b.ptr, off), C.size_t(len(out)))
		return nil
	}
	return b.d.stage(b, off, out, false)
}

const stagingSize = 64 << 20

// stage moves data between host memory and a device-local buffer in
// staging-sized pieces.
func (d *Device) stage(b *Buffer, off uint64, data []byte, upload bool) error {
	d.transferMu.Lock()
	defer d.transferMu.Unlock()
	if d.staging == nil {
		s, err := d.NewHostBuffer(stagingSize)
		if err != nil {
			return fmt.Errorf("create staging buffer: %w", err)
		}
		r, err := d.NewRecorder()
		if err != nil {
			s.Close()
			return fmt.Errorf("create staging recorder: %w", err)
		}
		d.staging, d.transfer = s, r
	}
	for done := 0; done < len(data); {
		n := min(len(data)-done, stagingSize)
		chunk := data[done : done+n]
		if err := d.transfer.Reset(); err != nil {
			return err
		}
		if upload {
			C.memcpy(d.staging.ptr, unsafe.Pointer(&chunk[0]), C.size_t(n))
			if err := d.transfer.CopyRange(b, off+uint64(done), d.staging, 0, uint64(n)); err != nil {
				return err
			}
		} else if err := d.transfer.CopyRange(d.staging, 0, b, off+uint64(done), uint64(n)); err != nil {
			return err
		}
		if err := d.transfer.Submit(); err != nil {
			return fmt.Errorf("staging copy: %w", err)
		}
		if !upload {
			C.memcpy(unsafe.Pointer(&chunk[0]), d.staging.ptr, C.size_t(n))
		}
		done += n
	}
	return nil
}

// Typed helpers. Data is little-endian as on every Vulkan host.

// WriteF32 writes float32 values starting at element index first.
func (b *Buffer) WriteF32(first uint64, v []float32) error {
	return b.Write(first*4, f32Bytes(v))
}

// ReadF32 reads len(out) float32 values starting at element index first.
func (b *Buffer) ReadF32(first uint64, out []float32) error {
	return b.Read(first*4, f32Bytes(out))
}

// WriteU32 writes uint32 values starting at element index first.
func (b *Buffer) WriteU32(first uint64, v []uint32) error {
	return b.Write(first*4, u32Bytes(v))
}

// ReadU32 reads uint32 values starting at element index first.
func (b *Buffer) ReadU32(first uint64, out []uint32) error {
	return b.Read(first*4, u32Bytes(out))
}

// WriteF16 writes IEEE half-precision values (raw bits) starting at element index first.
func (b *Buffer) WriteF16(first uint64, v []uint16) error {
	return b.Write(first*2, u16Bytes(v))
}

// ReadF16 reads half-precision values (raw bits).
func (b *Buffer) ReadF16(first uint64, out []uint16) error {
	return b.Read(first*2, u16Bytes(out))
}

// FillF32 writes value to n float32 elements from index first (host side).
func (b *Buffer) FillF32(first, n uint64, value float32) error {
	buf := make([]byte, n*4)
	bits := math.Float32bits(value)
	for i := uint64(0); i < n; i++ {
		binary.LittleEndian.PutUint32(buf[i*4:], bits)
	}
	return b.Write(first*4, buf)
}

func f32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*4)
}

func u32Bytes(v []uint32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*4)
}

func u16Bytes(v []uint16) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*2)
}

// Range is a part of a buffer bound to a kernel.
type Range struct {
	Buffer *Buffer
	Offset uint64
	Size   uint64 // 0 means to the end of the buffer
}

// All binds the whole buffer.
func (b *Buffer) All() Range { return Range{Buffer: b} }

// Sub binds size bytes from offset.
func (b *Buffer) Sub(offset, size uint64) Range { return Range{Buffer: b, Offset: offset, Size: size} }

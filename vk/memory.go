package vk

import (
	"fmt"
	"unsafe"

	vk "github.com/vulkan-go/vulkan"
)

// Drivers cap the number of live allocations (often 4096), so buffers are
// sub-allocated from large blocks; only big buffers get memory of their own.
const (
	defaultBlockSize = 256 << 20
	minBlockSize     = 16 << 20
)

// memoryPool sub-allocates one memory type.
type memoryPool struct {
	typeIndex uint32
	heapIndex uint32
	mapped    bool // host-visible: blocks are mapped persistently
	blockSize uint64
	blocks    []*memoryBlock
}

type memoryBlock struct {
	mem       vk.DeviceMemory
	size      uint64
	ptr       unsafe.Pointer // mapping of the whole block, when host-visible
	free      []span         // sorted by offset, coalesced
	used      int
	dedicated bool
}

type span struct{ off, size uint64 }

type allocation struct {
	pool   *memoryPool
	block  *memoryBlock
	offset uint64
	size   uint64
}

func alignUp(v, a uint64) uint64 {
	if a <= 1 {
		return v
	}
	return (v + a - 1) / a * a
}

// memoryType finds a memory type allowed by bits with all of want set,
// preferring ones that also have prefer.
func (d *Device) memoryType(bits uint32, want, prefer vk.MemoryPropertyFlagBits) (uint32, bool) {
	best, found := uint32(0), false
	for k := uint32(0); k < d.memProps.MemoryTypeCount; k++ {
		if bits&(1<<k) == 0 {
			continue
		}
		f := vk.MemoryPropertyFlagBits(d.memProps.MemoryTypes[k].PropertyFlags)
		if f&want != want {
			continue
		}
		if !found || (f&prefer == prefer && vk.MemoryPropertyFlagBits(d.memProps.MemoryTypes[best].PropertyFlags)&prefer != prefer) {
			best, found = k, true
		}
	}
	return best, found
}

func (d *Device) heapSize(heap uint32) uint64 {
	return uint64(d.memProps.MemoryHeaps[heap].Size)
}

// pool returns the pool for a memory type; callers hold d.mu.
func (d *Device) pool(typeIndex uint32) *memoryPool {
	for _, p := range d.heaps {
		if p.typeIndex == typeIndex {
			return p
		}
	}
	mt := d.memProps.MemoryTypes[typeIndex]
	p := &memoryPool{
		typeIndex: typeIndex,
		heapIndex: mt.HeapIndex,
		mapped:    vk.MemoryPropertyFlagBits(mt.PropertyFlags)&vk.MemoryPropertyHostVisibleBit != 0,
		blockSize: defaultBlockSize,
	}
	if hs := d.heapSize(p.heapIndex) / 8; hs < p.blockSize {
		p.blockSize = max(alignUp(hs, 1<<20), minBlockSize)
	}
	d.heaps = append(d.heaps, p)
	return p
}

// allocate finds size bytes aligned to align; callers hold d.mu.
func (p *memoryPool) allocate(d *Device, size, align uint64) (allocation, error) {
	if size > p.blockSize/2 {
		b, err := p.newBlock(d, size, true)
		if err != nil {
			return allocation{}, err
		}
		b.used = 1
		b.free = nil
		return allocation{pool: p, block: b, offset: 0, size: size}, nil
	}
	for _, b := range p.blocks {
		if off, ok := b.take(size, align); ok {
			return allocation{pool: p, block: b, offset: off, size: size}, nil
		}
	}
	b, err := p.newBlock(d, p.blockSize, false)
	if err != nil {
		return allocation{}, err
	}
	off, ok := b.take(size, align)
	if !ok {
		return allocation{}, fmt.Errorf("allocate %d bytes: block of %d bytes cannot hold it", size, p.blockSize)
	}
	return allocation{pool: p, block: b, offset: off, size: size}, nil
}

func (p *memoryPool) newBlock(d *Device, size uint64, dedicated bool) (*memoryBlock, error) {
	heap := d.heapSize(p.heapIndex)
	if size > heap {
		return nil, fmt.Errorf("allocate %d bytes: larger than memory heap %d (%d bytes): %w", size, p.heapIndex, heap, ErrOutOfDeviceMemory)
	}
	var a arena
	defer a.free()
	var mem vk.DeviceMemory
	info := &vk.MemoryAllocateInfo{
		SType:           vk.StructureTypeMemoryAllocateInfo,
		AllocationSize:  vk.DeviceSize(size),
		MemoryTypeIndex: p.typeIndex,
	}
	if err := check("vkAllocateMemory", vk.AllocateMemory(d.handle, info, nil, &mem)); err != nil {
		return nil, fmt.Errorf("allocate %d bytes of memory type %d: %w", size, p.typeIndex, err)
	}
	b := &memoryBlock{mem: mem, size: size, free: []span{{0, size}}, dedicated: dedicated}
	if p.mapped {
		var ptr unsafe.Pointer
		if err := check("vkMapMemory", vk.MapMemory(d.handle, mem, 0, vk.DeviceSize(vk.WholeSize), 0, &ptr)); err != nil {
			vk.FreeMemory(d.handle, mem, nil)
			return nil, fmt.Errorf("map %d bytes: %w", size, err)
		}
		b.ptr = ptr
	}
	p.blocks = append(p.blocks, b)
	return b, nil
}

// take carves size bytes at an aligned offset out of the first fitting span.
func (b *memoryBlock) take(size, align uint64) (uint64, bool) {
	for i, s := range b.free {
		off := alignUp(s.off, align)
		if off+size > s.off+s.size {
			continue
		}
		var rest []span
		if off > s.off {
			rest = append(rest, span{s.off, off - s.off})
		}
		if end := off + size; end < s.off+s.size {
			rest = append(rest, span{end, s.off + s.size - end})
		}
		b.free = append(b.free[:i], append(rest, b.free[i+1:]...)...)
		b.used++
		return off, true
	}
	return 0, false
}

// release returns an allocation; empty dedicated blocks are freed at once,
// empty shared blocks stay for reuse until the device closes.
func (p *memoryPool) release(d *Device, al allocation) {
	b := al.block
	b.used--
	if b.dedicated {
		p.freeBlock(d, b)
		return
	}
	s := span{al.offset, al.size}
	i := 0
	for i < len(b.free) && b.free[i].off < s.off {
		i++
	}
	b.free = append(b.free[:i], append([]span{s}, b.free[i:]...)...)
	// Coalesce with neighbours.
	merged := b.free[:0]
	for _, f := range b.free {
		if n := len(merged); n > 0 && merged[n-1].off+merged[n-1].size == f.off {
			merged[n-1].size += f.size
			continue
		}
		merged = append(merged, f)
	}
	b.free = merged
}

func (p *memoryPool) freeBlock(d *Device, b *memoryBlock) {
	for i, x := range p.blocks {
		if x == b {
			p.blocks = append(p.blocks[:i], p.blocks[i+1:]...)
			break
		}
	}
	if b.ptr != nil {
		vk.UnmapMemory(d.handle, b.mem)
	}
	vk.FreeMemory(d.handle, b.mem, nil)
}

func (p *memoryPool) destroy(d *Device) {
	for len(p.blocks) > 0 {
		p.freeBlock(d, p.blocks[0])
	}
}

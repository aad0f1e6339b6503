package vk

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"time"
	"unsafe"

	vk "github.com/vulkan-go/vulkan"
)

// Recorder records dispatches, copies and timestamps into one command buffer
// and submits it. It inserts a memory barrier before any command that reads
// or writes a buffer written since the last barrier, or writes one read since
// then. A recorded command buffer can be submitted again unchanged (Submit),
// or cleared (Reset). A Recorder is not safe for concurrent use; several
// Recorders may be used from different goroutines.
type Recorder struct {
	d         *Device
	pool      vk.CommandPool
	cmd       vk.CommandBuffer
	fence     vk.Fence
	descPools []vk.DescriptorPool
	poolIdx   int    // pool sets are drawn from
	setsLeft  uint32 // sets left in descPools[poolIdx]
	queries   vk.QueryPool
	labels    []string
	recording bool
	ended     bool
	written   map[vk.Buffer]bool
	read      map[vk.Buffer]bool
	results   []uint64
	dispatchs int
	barriers  int
	inFlight  bool // submitted by Start and not yet waited for
	// Arguments handed to the shim by address live here: locals whose
	// address goes to C escape to the heap, once per call.
	args struct {
		handles, offsets, ranges [maxBindings]C.uint64_t
		set                      C.uint64_t
	}
}

// MaxTimestamps is the most timestamps one Recorder holds.
const MaxTimestamps = 512

// maxBindings is the most storage buffers a kernel binds (the shim's
// DEFT_MAX_BINDINGS).
const maxBindings = 64

const setsPerPool = 256

// NewRecorder creates a recorder with its own command pool.
func (d *Device) NewRecorder() (*Recorder, error) {
	r := &Recorder{d: d, poolIdx: -1}
	var a arena
	defer a.free()
	// Out-parameters are locals: cgo rejects pointers into structs holding Go pointers.
	var pool vk.CommandPool
	var fence vk.Fence
	var queries vk.QueryPool
	if err := check("vkCreateCommandPool", vk.CreateCommandPool(d.handle, &vk.CommandPoolCreateInfo{
		SType:            vk.StructureTypeCommandPoolCreateInfo,
		Flags:            vk.CommandPoolCreateFlags(vk.CommandPoolCreateResetCommandBufferBit),
		QueueFamilyIndex: d.Info.ComputeQueue,
	}, nil, &pool)); err != nil {
		return nil, fmt.Errorf("create recorder: %w", err)
	}
	r.pool = pool
	cmds := make([]vk.CommandBuffer, 1)
	if err := check("vkAllocateCommandBuffers", vk.AllocateCommandBuffers(d.handle, &vk.CommandBufferAllocateInfo{
		SType:              vk.StructureTypeCommandBufferAllocateInfo,
		CommandPool:        r.pool,
		Level:              vk.CommandBufferLevelPrimary,
		CommandBufferCount: 1,
	}, cmds)); err != nil {
		r.Close()
		return nil, fmt.Errorf("create recorder: %w", err)
	}
	r.cmd = cmds[0]
	if err := check("vkCreateFence", vk.CreateFence(d.handle, &vk.FenceCreateInfo{SType: vk.StructureTypeFenceCreateInfo}, nil, &fence)); err != nil {
		r.Close()
		return nil, fmt.Errorf("create recorder: %w", err)
	}
	r.fence = fence
	if d.Info.Timestamps {
		if err := check("vkCreateQueryPool", vk.CreateQueryPool(d.handle, &vk.QueryPoolCreateInfo{
			SType:      vk.StructureTypeQueryPoolCreateInfo,
			QueryType:  vk.QueryTypeTimestamp,
			QueryCount: MaxTimestamps,
		}, nil, &queries)); err != nil {
			r.Close()
			return nil, fmt.Errorf("create recorder: %w", err)
		}
		r.queries = queries
	}
	d.mu.Lock()
	d.recs[r] = struct{}{}
	d.mu.Unlock()
	return r, nil
}

// Close waits for work in flight and releases the recorder.
func (r *Recorder) Close() {
	if r == nil || r.d == nil {
		return
	}
	_ = r.Wait() // a lost device cannot be waited for; release anyway
	d := r.d
	for _, p := range r.descPools {
		vk.DestroyDescriptorPool(d.handle, p, nil)
	}
	r.descPools = nil
	if r.queries != nil {
		vk.DestroyQueryPool(d.handle, r.queries, nil)
	}
	if r.fence != nil {
		vk.DestroyFence(d.handle, r.fence, nil)
	}
	if r.pool != nil {
		vk.DestroyCommandPool(d.handle, r.pool, nil) // frees the command buffer too
	}
	d.mu.Lock()
	delete(d.recs, r)
	d.mu.Unlock()
	r.d = nil
}

// begin starts recording on first use after creation or Reset.
func (r *Recorder) begin() error {
	if r.d == nil {
		return fmt.Errorf("record: recorder is closed")
	}
	if r.ended {
		return fmt.Errorf("record: command buffer already submitted; call Reset before recording more")
	}
	if r.recording {
		return nil
	}
	// Through the shim: the binding's marshalling of the begin info
	// allocates on every step.
	if err := check("vkBeginCommandBuffer", vk.Result(C.deft_begin_commands(&r.d.fns, unsafe.Pointer(r.cmd)))); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	if r.queries != nil {
		vk.CmdResetQueryPool(r.cmd, r.queries, 0, MaxTimestamps)
	}
	r.recording = true
	if r.written == nil {
		r.written, r.read = map[vk.Buffer]bool{}, map[vk.Buffer]bool{}
	}
	clear(r.written)
	clear(r.read)
	return nil
}

// Reset discards what was recorded (after waiting for work in flight);
// descriptor sets are recycled.
func (r *Recorder) Reset() error {
	if r.d == nil {
		return fmt.Errorf("reset recorder: recorder is closed")
	}
	if err := r.Wait(); err != nil {
		return fmt.Errorf("reset recorder: %w", err)
	}
	if r.recording && !r.ended {
		vk.EndCommandBuffer(r.cmd)
	}
	if err := check("vkResetCommandBuffer", vk.ResetCommandBuffer(r.cmd, 0)); err != nil {
		return fmt.Errorf("reset recorder: %w", err)
	}
	for _, p := range r.descPools {
		if err := check("vkResetDescriptorPool", vk.ResetDescriptorPool(r.d.handle, p, 0)); err != nil {
			return fmt.Errorf("reset recorder: %w", err)
		}
	}
	r.poolIdx, r.setsLeft = -1, 0
	r.recording, r.ended = false, false
	r.labels, r.results = r.labels[:0], nil
	r.dispatchs, r.barriers = 0, 0
	return nil
}

// hazard inserts a barrier when reads or writes conflict with earlier writes
// (or writes with earlier reads) since the last barrier.
func (r *Recorder) hazard(reads, writes []vk.Buffer) {
	need := false
	for _, b := range reads {
		need = need || r.written[b]
	}
	for _, b := range writes {
		need = need || r.written[b] || r.read[b]
	}
	if need {
		r.Barrier()
	}
	for _, b := range reads {
		r.read[b] = true
	}
	for _, b := range writes {
		r.written[b] = true
	}
}

// hazard1 is hazard for one read and one written buffer, without slices.
func (r *Recorder) hazard1(read, write vk.Buffer) {
	if r.written[read] || r.written[write] || r.read[write] {
		r.Barrier()
	}
	r.read[read] = true
	r.written[write] = true
}

// Barrier makes all earlier compute and transfer writes visible to later
// compute and transfer commands, those of earlier submissions included (a
// step that reuses the buffers of the step before starts with one).
func (r *Recorder) Barrier() {
	if r.begin() != nil {
		return
	}
	stages := C.uint32_t(vk.PipelineStageComputeShaderBit | vk.PipelineStageTransferBit)
	C.deft_cmd_barrier(r.d.fns.barrier, unsafe.Pointer(r.cmd), stages, stages,
		C.uint32_t(vk.AccessShaderWriteBit|vk.AccessTransferWriteBit),
		C.uint32_t(vk.AccessShaderReadBit|vk.AccessShaderWriteBit|vk.AccessTransferReadBit|vk.AccessTransferWriteBit))
	clear(r.written)
	clear(r.read)
	r.barriers++
}

func (r *Recorder) descriptorSet(k *Kernel) (vk.DescriptorSet, error) {
	for {
		if r.setsLeft == 0 {
			r.poolIdx++
			if r.poolIdx >= len(r.descPools) {
				var raw C.uint64_t
				if err := check("vkCreateDescriptorPool", vk.Result(C.deft_create_descriptor_pool(unsafe.Pointer(r.d.inst.handle),
					unsafe.Pointer(r.d.handle), setsPerPool, setsPerPool*16, &raw))); err != nil {
					return nil, err
				}
				p := *(*vk.DescriptorPool)(unsafe.Pointer(&raw))
				r.descPools = append(r.descPools, p)
				r.poolIdx = len(r.descPools) - 1
			}
			r.setsLeft = setsPerPool
		}
		raw := &r.args.set
		res := vk.Result(C.deft_alloc_set(&r.d.fns, unsafe.Pointer(r.d.handle), handle64(unsafe.Pointer(r.descPools[r.poolIdx])),
			handle64(unsafe.Pointer(k.setLay)), raw))
		if res == vk.ErrorOutOfPoolMemory || res == vk.ErrorFragmentedPool {
			r.setsLeft = 0 // this pool ran out of descriptors: move on to the next
			continue
		}
		if err := check("vkAllocateDescriptorSets", res); err != nil {
			return nil, err
		}
		r.setsLeft--
		return *(*vk.DescriptorSet)(unsafe.Pointer(raw)), nil
	}
}

// Dispatch records kernel k over groups workgroups with push constants push
// (len must equal the kernel's push size) and one buffer range per binding.
func (r *Recorder) Dispatch(k *Kernel, groups [3]uint32, push []byte, bufs ...Range) error {
	if err := r.checkDispatch(k, groups, push, bufs); err != nil {
		return fmt.Errorf("dispatch %s: %w", k.Name, err)
	}
	if err := r.begin(); err != nil {
		return err
	}
	set, err := r.descriptorSet(k)
	if err != nil {
		return fmt.Errorf("dispatch %s: %w", k.Name, err)
	}
	// The descriptor writes are built in C (the shim): the binding would
	// put the nested buffer infos in memory its finalizers may free during
	// the call.
	handles, offsets, ranges := &r.args.handles, &r.args.offsets, &r.args.ranges
	var readBufs, writeBufs [maxBindings]vk.Buffer
	reads, writes := readBufs[:0], writeBufs[:0]
	for i, b := range bufs {
		size := uint64(b.Size)
		if b.Size == 0 {
			size = uint64(vk.WholeSize)
		}
		handles[i], offsets[i], ranges[i] = handle64(unsafe.Pointer(b.Buffer.handle)), C.uint64_t(b.Offset), C.uint64_t(size)
		if k.bindings[i] == Write {
			writes = append(writes, b.Buffer.handle)
		} else {
			reads = append(reads, b.Buffer.handle)
		}
	}
	if len(bufs) > 0 {
		if rc := C.deft_update_buffer_descriptors(r.d.updateDescriptors, unsafe.Pointer(r.d.handle), handle64(unsafe.Pointer(set)),
			C.uint32_t(len(bufs)), &handles[0], &offsets[0], &ranges[0]); rc != 0 {
			return fmt.Errorf("dispatch %s: vkUpdateDescriptorSets: %w", k.Name, check("vkUpdateDescriptorSets", vk.Result(rc)))
		}
	}
	r.hazard(reads, writes)
	// One shim call binds, pushes and dispatches: the binding's calls
	// allocate for their array arguments. The push constants are copied
	// into the command buffer during the call.
	var pushPtr unsafe.Pointer
	if k.pushSize > 0 {
		pushPtr = unsafe.Pointer(&push[0])
	}
	C.deft_cmd_dispatch(&r.d.fns, unsafe.Pointer(r.cmd), handle64(unsafe.Pointer(k.pipeline)), handle64(unsafe.Pointer(k.layout)),
		handle64(unsafe.Pointer(set)), C.uint32_t(k.pushSize), pushPtr, C.uint32_t(groups[0]), C.uint32_t(groups[1]), C.uint32_t(groups[2]))
	r.dispatchs++
	return nil
}

func (r *Recorder) checkDispatch(k *Kernel, groups [3]uint32, push []byte, bufs []Range) error {
	if k == nil || k.pipeline == nil {
		return fmt.Errorf("kernel is nil or destroyed")
	}
	if k.d != r.d {
		return fmt.Errorf("kernel belongs to another device")
	}
	if len(bufs) != len(k.bindings) {
		return fmt.Errorf("%d buffers for %d bindings", len(bufs), len(k.bindings))
	}
	if uint32(len(push)) != k.pushSize {
		return fmt.Errorf("%d bytes of push constants, kernel takes %d", len(push), k.pushSize)
	}
	for i, g := range groups {
		if g > r.d.Info.MaxWorkgroupCount[i] {
			return fmt.Errorf("workgroup count %d in dimension %d exceeds the device limit %d", g, i, r.d.Info.MaxWorkgroupCount[i])
		}
	}
	for i, b := range bufs {
		if b.Buffer == nil || b.Buffer.handle == nil {
			return fmt.Errorf("binding %d: buffer is nil or closed", i)
		}
		if b.Buffer.d != r.d {
			return fmt.Errorf("binding %d: buffer belongs to another device", i)
		}
		size := b.Size
		if size == 0 {
			if b.Offset > b.Buffer.size {
				return fmt.Errorf("binding %d: offset %d beyond buffer of %d bytes", i, b.Offset, b.Buffer.size)
			}
			size = max(alignUp(b.Buffer.size, 4), 4) - b.Offset
		} else if b.Offset > b.Buffer.size || size > b.Buffer.size-b.Offset {
			return fmt.Errorf("binding %d: range [%d, %d) outside buffer of %d bytes", i, b.Offset, b.Offset+size, b.Buffer.size)
		}
		if b.Offset%r.d.Info.MinStorageAlignment != 0 {
			return fmt.Errorf("binding %d: offset %d not a multiple of the device's storage alignment %d", i, b.Offset, r.d.Info.MinStorageAlignment)
		}
		if size > uint64(r.d.Info.MaxStorageBufferRange) {
			return fmt.Errorf("binding %d: %d bytes exceed the device's storage-buffer range %d; bind a Sub range", i, size, r.d.Info.MaxStorageBufferRange)
		}
	}
	return nil
}

// CopyRange records a copy of n bytes from src at srcOff to dst at dstOff.
func (r *Recorder) CopyRange(dst *Buffer, dstOff uint64, src *Buffer, srcOff, n uint64) error {
	if err := src.checkRange("copy source", srcOff, n); err != nil {
		return err
	}
	if err := dst.checkRange("copy destination", dstOff, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := r.begin(); err != nil {
		return err
	}
	r.hazard1(src.handle, dst.handle)
	C.deft_cmd_copy(r.d.fns.copy, unsafe.Pointer(r.cmd), handle64(unsafe.Pointer(src.handle)), handle64(unsafe.Pointer(dst.handle)),
		C.uint64_t(srcOff), C.uint64_t(dstOff), C.uint64_t(n))
	return nil
}

// Fill records writing the 32-bit pattern value over the whole buffer.
func (r *Recorder) Fill(b *Buffer, value uint32) error {
	if err := b.checkRange("fill", 0, b.size); err != nil {
		return err
	}
	if err := r.begin(); err != nil {
		return err
	}
	r.hazard(nil, []vk.Buffer{b.handle})
	vk.CmdFillBuffer(r.cmd, b.handle, 0, vk.DeviceSize(vk.WholeSize), value)
	return nil
}

// Timestamp records the GPU time at which all earlier commands have
// completed, under label. Timings reads them after Submit.
func (r *Recorder) Timestamp(label string) error {
	if r.queries == nil {
		return fmt.Errorf("timestamp %q: device %q has no compute timestamps", label, r.d.Info.Name)
	}
	if len(r.labels) >= MaxTimestamps {
		return fmt.Errorf("timestamp %q: more than %d timestamps in one command buffer", label, MaxTimestamps)
	}
	if err := r.begin(); err != nil {
		return err
	}
	vk.CmdWriteTimestamp(r.cmd, vk.PipelineStageBottomOfPipeBit, r.queries, uint32(len(r.labels)))
	r.labels = append(r.labels, label)
	return nil
}

// Submit ends recording (if needed), submits and waits for completion.
// Submitting again replays the same commands.
func (r *Recorder) Submit() error {
	if err := r.Start(); err != nil {
		return err
	}
	return r.Wait()
}

// Start ends recording (if needed) and submits without waiting: the host
// can prepare the next step while the GPU runs this one. Wait (or Submit,
// Reset, Close and reading timestamps, which wait first) completes it.
func (r *Recorder) Start() error {
	if r.d == nil {
		return fmt.Errorf("submit: recorder is closed")
	}
	if err := r.Wait(); err != nil {
		return err
	}
	if err := r.begin(); err != nil && !r.ended {
		return err
	}
	if !r.ended {
		// Make results visible to the host through mapped memory.
		C.deft_cmd_barrier(r.d.fns.barrier, unsafe.Pointer(r.cmd),
			C.uint32_t(vk.PipelineStageComputeShaderBit|vk.PipelineStageTransferBit), C.uint32_t(vk.PipelineStageHostBit),
			C.uint32_t(vk.AccessShaderWriteBit|vk.AccessTransferWriteBit), C.uint32_t(vk.AccessHostReadBit))
		if err := check("vkEndCommandBuffer", vk.EndCommandBuffer(r.cmd)); err != nil {
			return fmt.Errorf("submit: %w", err)
		}
		r.ended = true
	}
	d := r.d
	if err := check("vkResetFences", vk.Result(C.deft_reset_fence(&d.fns, unsafe.Pointer(d.handle), handle64(unsafe.Pointer(r.fence))))); err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	d.queueMu.Lock()
	res := vk.Result(C.deft_queue_submit(d.fns.submit, unsafe.Pointer(d.queue), unsafe.Pointer(r.cmd), handle64(unsafe.Pointer(r.fence))))
	d.queueMu.Unlock()
	if err := check("vkQueueSubmit", res); err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	r.inFlight = true
	r.results = nil
	return nil
}

// Busy reports whether work started with Start has not been waited for.
func (r *Recorder) Busy() bool { return r.inFlight }

// Wait blocks until the work started by Start completes (at most the
// device's FenceTimeout); it returns at once when nothing is in flight.
func (r *Recorder) Wait() error {
	if !r.inFlight {
		return nil
	}
	d := r.d
	r.inFlight = false
	res := C.deft_wait_fence(&d.fns, unsafe.Pointer(d.handle), handle64(unsafe.Pointer(r.fence)), C.uint64_t(d.FenceTimeout/time.Nanosecond))
	if err := check("vkWaitForFences", vk.Result(res)); err != nil {
		return fmt.Errorf("wait for GPU work (limit %s): %w", d.FenceTimeout, err)
	}
	return nil
}

// Timing is the GPU time between two consecutive timestamps.
type Timing struct {
	From, To string
	Elapsed  time.Duration
}

// Timestamps returns the recorded timestamps in nanoseconds (GPU clock) by label order.
func (r *Recorder) Timestamps() ([]uint64, error) {
	if len(r.labels) == 0 {
		return nil, nil
	}
	if r.results != nil {
		return r.results, nil
	}
	if !r.ended {
		return nil, fmt.Errorf("read timestamps: not submitted")
	}
	if err := r.Wait(); err != nil {
		return nil, fmt.Errorf("read timestamps: %w", err)
	}
	n := len(r.labels)
	var a arena
	defer a.free()
	p := a.alloc(8 * n)
	if err := check("vkGetQueryPoolResults", vk.GetQueryPoolResults(r.d.handle, r.queries, 0, uint32(n), uint(8*n), p, 8,
		vk.QueryResultFlags(vk.QueryResult64Bit|vk.QueryResultWaitBit))); err != nil {
		return nil, fmt.Errorf("read timestamps: %w", err)
	}
	raw := unsafe.Slice((*uint64)(p), n)
	mask := ^uint64(0)
	if bits := r.d.Info.TimestampBits; bits < 64 {
		mask = 1<<bits - 1
	}
	out := make([]uint64, n)
	for i, t := range raw {
		out[i] = uint64(float64(t&mask) * r.d.Info.TimestampPeriod)
	}
	r.results = out
	return out, nil
}

// Timings returns the intervals between consecutive timestamps.
func (r *Recorder) Timings() ([]Timing, error) {
	ts, err := r.Timestamps()
	if err != nil {
		return nil, err
	}
	var out []Timing
	for i := 1; i < len(ts); i++ {
		out = append(out, Timing{From: r.labels[i-1], To: r.labels[i], Elapsed: time.Duration(ts[i] - ts[i-1])})
	}
	return out, nil
}

// Stats counts what was recorded since the last Reset.
func (r *Recorder) Stats() (dispatches, barriers int) { return r.dispatchs, r.barriers }

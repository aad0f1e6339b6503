package vk_test

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/shaders"
	"github.com/deft-vk/deft/vk"
)

func randF32(r *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r.NormFloat64())
	}
	return out
}

func push(vals ...any) []byte {
	var out []byte
	for _, v := range vals {
		switch x := v.(type) {
		case uint32:
			out = binary.LittleEndian.AppendUint32(out, x)
		case float32:
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(x))
		default:
			panic("push: unsupported type")
		}
	}
	return out
}

func kernel(t *testing.T, d *vk.Device, name string, bindings []vk.Access, pushSize uint32, spec map[uint32]uint32) *vk.Kernel {
	t.Helper()
	code, err := shaders.SPIRV(name)
	require.NoError(t, err)
	k, err := d.Kernel(vk.KernelSpec{Name: name, SPIRV: code, Bindings: bindings, PushSize: pushSize, Spec: spec})
	require.NoError(t, err)
	return k
}

func TestDeviceInfo(t *testing.T) {
	d := gputest.Device(t)
	info := d.Info
	t.Logf("device: %+v", info)
	assert.NotEmpty(t, info.Name)
	assert.NotZero(t, info.SubgroupSize)
	assert.True(t, info.SubgroupInCompute)
	assert.Contains(t, info.SubgroupOps, "arithmetic")
	assert.GreaterOrEqual(t, info.MaxSharedMemory, uint32(16384))
	assert.NotEmpty(t, info.MemoryHeaps)
	assert.Len(t, info.UUID, 32)
	assert.NotEmpty(t, d.Instance().Devices())
}

func TestSelectDevice(t *testing.T) {
	devs := []vk.DeviceInfo{
		{Index: 0, Name: "llvmpipe (LLVM 15.0.6, 256 bits)", Type: vk.TypeCPU},
		{Index: 1, Name: "NVIDIA H100 80GB HBM3", Type: vk.TypeDiscrete},
		{Index: 2, Name: "Intel(R) Graphics", Type: vk.TypeIntegrated},
	}
	idx, err := vk.SelectDevice(devs, "")
	require.NoError(t, err)
	assert.Equal(t, 1, idx, "discrete first")
	idx, err = vk.SelectDevice(devs, "2")
	require.NoError(t, err)
	assert.Equal(t, 2, idx)
	idx, err = vk.SelectDevice(devs, "LLVM")
	require.NoError(t, err)
	assert.Equal(t, 0, idx)
	_, err = vk.SelectDevice(devs, "7")
	assert.ErrorIs(t, err, vk.ErrNoDevice)
	assert.ErrorContains(t, err, "out of range")
	_, err = vk.SelectDevice(devs, "radeon")
	assert.ErrorIs(t, err, vk.ErrNoDevice)
	_, err = vk.SelectDevice(nil, "")
	assert.ErrorIs(t, err, vk.ErrNoDevice)
}

func TestMissingDeviceIndex(t *testing.T) {
	d := gputest.Device(t)
	_, err := d.Instance().Open("99")
	assert.ErrorIs(t, err, vk.ErrNoDevice)
}

func TestBufferRoundTrip(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	for _, n := range []int{0, 1, 3, 1023, 4097, 17 << 20} { // the last spans several staging chunks
		b, err := d.NewBuffer(uint64(n))
		require.NoError(t, err)
		in := make([]byte, n)
		for i := range in {
			in[i] = byte(r.Uint32())
		}
		require.NoError(t, b.Write(0, in))
		out := make([]byte, n)
		for i := range out {
			out[i] = ^in[i] // differs from in everywhere
		}
		require.NoError(t, b.Read(0, out))
		assert.Equal(t, in, out, "size %d", n)
		if n > 8 {
			part := []byte{1, 2, 3}
			require.NoError(t, b.Write(uint64(n-3), part))
			got := make([]byte, 3)
			require.NoError(t, b.Read(uint64(n-3), got))
			assert.Equal(t, part, got)
		}
		assert.Error(t, b.Write(uint64(n), []byte{1}), "write past the end")
		assert.Error(t, b.Read(1, make([]byte, n)), "read past the end")
		b.Close()
	}
}

func TestTypedBuffers(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	f := randF32(r, 1000)
	b, err := d.NewBuffer(4000)
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, b.WriteF32(0, f))
	got := make([]float32, 1000)
	require.NoError(t, b.ReadF32(0, got))
	assert.Equal(t, f, got)
	u := []uint32{r.Uint32(), r.Uint32(), r.Uint32()}
	require.NoError(t, b.WriteU32(5, u))
	gu := make([]uint32, 3)
	require.NoError(t, b.ReadU32(5, gu))
	assert.Equal(t, u, gu)
	h := []uint16{uint16(r.Uint32()), 0x3c00, 0x7bff}
	require.NoError(t, b.WriteF16(100, h))
	gh := make([]uint16, 3)
	require.NoError(t, b.ReadF16(100, gh))
	assert.Equal(t, h, gh)
}

func TestManySmallBuffersShareBlocks(t *testing.T) {
	d := gputest.Device(t)
	var bufs []*vk.Buffer
	for i := 0; i < 600; i++ { // far fewer allocations than buffers
		b, err := d.NewBuffer(uint64(64 + i))
		require.NoError(t, err)
		require.NoError(t, b.WriteU32(0, []uint32{uint32(i)}))
		bufs = append(bufs, b)
	}
	for i, b := range bufs {
		got := make([]uint32, 1)
		require.NoError(t, b.ReadU32(0, got))
		require.Equal(t, uint32(i), got[0])
	}
	for _, b := range bufs {
		b.Close()
	}
}

func TestAllocationLargerThanHeap(t *testing.T) {
	d := gputest.Device(t)
	var largest uint64
	for _, h := range d.Info.MemoryHeaps {
		largest = max(largest, h.Size)
	}
	_, err := d.NewBuffer(largest * 4)
	require.Error(t, err)
	assert.ErrorIs(t, err, vk.ErrOutOfDeviceMemory)
}

func TestInvalidSPIRV(t *testing.T) {
	d := gputest.Device(t)
	for name, code := range map[string][]byte{
		"empty":     nil,
		"odd":       {1, 2, 3},
		"bad magic": make([]byte, 64),
	} {
		_, err := d.Kernel(vk.KernelSpec{Name: "bad-" + name, SPIRV: code})
		assert.ErrorContains(t, err, "invalid SPIR-V", name)
	}
}

func TestSaxpy(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	k := kernel(t, d, "saxpy", []vk.Access{vk.Read, vk.Write}, 8, map[uint32]uint32{0: 64})
	for _, n := range []int{1, 777, 100003} {
		x, y := randF32(r, n), randF32(r, n)
		a := float32(r.NormFloat64())
		bx, err := d.NewBuffer(uint64(4 * n))
		require.NoError(t, err)
		by, err := d.NewBuffer(uint64(4 * n))
		require.NoError(t, err)
		require.NoError(t, bx.WriteF32(0, x))
		require.NoError(t, by.WriteF32(0, y))
		rec, err := d.NewRecorder()
		require.NoError(t, err)
		groups := uint32(min((n+63)/64, 256)) // fewer groups than elements: exercises the grid stride
		require.NoError(t, rec.Dispatch(k, [3]uint32{groups, 1, 1}, push(uint32(n), a), bx.All(), by.All()))
		require.NoError(t, rec.Submit())
		got := make([]float32, n)
		require.NoError(t, by.ReadF32(0, got))
		for i := range got {
			want := a*x[i] + y[i]
			require.InDelta(t, want, got[i], 1e-5*math.Max(1, math.Abs(float64(want))), "element %d of %d", i, n)
		}
		rec.Close()
		bx.Close()
		by.Close()
	}
}

func TestSubgroupSum(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	for _, wg := range []uint32{32, 128, 256} {
		k := kernel(t, d, "subgroup_sum", []vk.Access{vk.Read, vk.Write}, 4, map[uint32]uint32{0: wg})
		n := int(wg)*37 - 5 // a ragged last group
		groups := (uint32(n) + wg - 1) / wg
		x := randF32(r, n)
		in, err := d.NewBuffer(uint64(4 * n))
		require.NoError(t, err)
		out, err := d.NewBuffer(uint64(4 * groups))
		require.NoError(t, err)
		require.NoError(t, in.WriteF32(0, x))
		require.NoError(t, out.FillF32(0, uint64(groups), float32(math.NaN())))
		rec, err := d.NewRecorder()
		require.NoError(t, err)
		require.NoError(t, rec.Dispatch(k, [3]uint32{groups, 1, 1}, push(uint32(n)), in.All(), out.All()))
		require.NoError(t, rec.Submit())
		got := make([]float32, groups)
		require.NoError(t, out.ReadF32(0, got))
		for g := range got {
			var want float64
			for i := g * int(wg); i < min((g+1)*int(wg), n); i++ {
				want += float64(x[i])
			}
			require.InDelta(t, want, float64(got[g]), 1e-4, "workgroup size %d, group %d (subgroup size %d)", wg, g, d.Info.SubgroupSize)
		}
		rec.Close()
		in.Close()
		out.Close()
	}
}

func TestSpecializationAndPushConstants(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	scale := float32(r.Float64()*4 - 2)
	bias := int32(r.IntN(100) - 50)
	k := kernel(t, d, "spec_push", []vk.Access{vk.Read, vk.Write}, 12,
		map[uint32]uint32{0: 64, 1: math.Float32bits(scale), 2: uint32(bias)})
	n := 1000
	x := randF32(r, n)
	offset, step := float32(r.NormFloat64()), float32(r.NormFloat64())
	in, err := d.NewBuffer(uint64(4 * n))
	require.NoError(t, err)
	out, err := d.NewBuffer(uint64(4 * n))
	require.NoError(t, err)
	defer in.Close()
	defer out.Close()
	require.NoError(t, in.WriteF32(0, x))
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	require.NoError(t, rec.Dispatch(k, [3]uint32{uint32((n + 63) / 64), 1, 1}, push(uint32(n), offset, step), in.All(), out.All()))
	require.NoError(t, rec.Submit())
	got := make([]float32, n)
	require.NoError(t, out.ReadF32(0, got))
	for i := range got {
		want := x[i]*scale + float32(bias) + offset + float32(i)*step
		require.InDelta(t, want, got[i], 1e-4*math.Max(1, math.Abs(float64(want))), "element %d", i)
	}
	// The same kernel spec is cached; a different specialization is a new pipeline.
	assert.Same(t, k, kernel(t, d, "spec_push", []vk.Access{vk.Read, vk.Write}, 12,
		map[uint32]uint32{0: 64, 1: math.Float32bits(scale), 2: uint32(bias)}))
	assert.NotSame(t, k, kernel(t, d, "spec_push", []vk.Access{vk.Read, vk.Write}, 12,
		map[uint32]uint32{0: 64, 1: math.Float32bits(scale + 1), 2: uint32(bias)}))
}

func TestDispatchChecks(t *testing.T) {
	d := gputest.Device(t)
	k := kernel(t, d, "saxpy", []vk.Access{vk.Read, vk.Write}, 8, map[uint32]uint32{0: 64})
	b, err := d.NewBuffer(64)
	require.NoError(t, err)
	defer b.Close()
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	assert.ErrorContains(t, rec.Dispatch(k, [3]uint32{1, 1, 1}, push(uint32(1), float32(1)), b.All()), "1 buffers for 2 bindings")
	assert.ErrorContains(t, rec.Dispatch(k, [3]uint32{1, 1, 1}, nil, b.All(), b.All()), "push constants")
	assert.ErrorContains(t, rec.Dispatch(k, [3]uint32{1, 1, 1}, push(uint32(1), float32(1)), b.Sub(0, 128), b.All()), "outside buffer")
	assert.ErrorContains(t, rec.Dispatch(k, [3]uint32{math.MaxUint32, 1, 1}, push(uint32(1), float32(1)), b.All(), b.All()), "exceeds the device limit")
}

func TestBarriersBetweenDependentDispatches(t *testing.T) {
	d := gputest.Device(t)
	r := gputest.Rand(t)
	k := kernel(t, d, "saxpy", []vk.Access{vk.Read, vk.Write}, 8, map[uint32]uint32{0: 64})
	n := 4096
	x, y := randF32(r, n), randF32(r, n)
	bx, _ := d.NewBuffer(uint64(4 * n))
	by, _ := d.NewBuffer(uint64(4 * n))
	defer bx.Close()
	defer by.Close()
	require.NoError(t, bx.WriteF32(0, x))
	require.NoError(t, by.WriteF32(0, y))
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	const steps = 5
	for s := 0; s < steps; s++ {
		require.NoError(t, rec.Dispatch(k, [3]uint32{uint32(n / 64), 1, 1}, push(uint32(n), float32(1)), bx.All(), by.All()))
	}
	dispatches, barriers := rec.Stats()
	assert.Equal(t, steps, dispatches)
	assert.Equal(t, steps-1, barriers, "each dispatch reads what the previous one wrote")
	require.NoError(t, rec.Submit())
	got := make([]float32, n)
	require.NoError(t, by.ReadF32(0, got))
	for i := range got {
		require.InDelta(t, y[i]+steps*x[i], got[i], 1e-4)
	}
	// Submitting the same command buffer again replays it.
	require.NoError(t, rec.Submit())
	require.NoError(t, by.ReadF32(0, got))
	for i := range got {
		require.InDelta(t, y[i]+2*steps*x[i], got[i], 1e-4)
	}
	// Recording after a submit needs a Reset.
	assert.Error(t, rec.Fill(by, 0))
	require.NoError(t, rec.Reset())
	require.NoError(t, rec.Fill(by, 0))
	require.NoError(t, rec.Submit())
	require.NoError(t, by.ReadF32(0, got))
	assert.Equal(t, make([]float32, n), got)
}

func TestTimestamps(t *testing.T) {
	d := gputest.Device(t)
	if !d.Info.Timestamps {
		t.Fatalf("device %s reports no compute timestamps; every supported device must", d.Info.Name)
	}
	k := kernel(t, d, "copy", []vk.Access{vk.Read, vk.Write}, 4, map[uint32]uint32{0: 256})
	n := 1 << 20
	src, _ := d.NewBuffer(uint64(16 * n))
	dst, _ := d.NewBuffer(uint64(16 * n))
	defer src.Close()
	defer dst.Close()
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	require.NoError(t, rec.Timestamp("start"))
	require.NoError(t, rec.Dispatch(k, [3]uint32{1024, 1, 1}, push(uint32(n)), src.All(), dst.All()))
	require.NoError(t, rec.Timestamp("copied"))
	require.NoError(t, rec.Submit())
	tm, err := rec.Timings()
	require.NoError(t, err)
	require.Len(t, tm, 1)
	assert.Equal(t, "start", tm[0].From)
	assert.Positive(t, tm[0].Elapsed, "a 32 MiB copy takes measurable time")
}

func TestOpenWithBadLibrary(t *testing.T) {
	gputest.Device(t) // the process already loaded the real loader
	_, err := vk.Open(vk.Options{Library: "/nonexistent/libvulkan.so.1"})
	require.Error(t, err)
	assert.False(t, errors.Is(err, vk.ErrDeviceLost))
}

// TestKernelStats: where the device reports compiler statistics, a kernel
// has some (NVIDIA: registers, shared memory); elsewhere (lavapipe) Stats
// says which extension is missing.
func TestKernelStats(t *testing.T) {
	d := gputest.Device(t)
	k := kernel(t, d, "saxpy", []vk.Access{vk.Read, vk.Write}, 8, map[uint32]uint32{0: 64})
	stats, err := k.Stats()
	if !d.KernelStats() {
		require.Error(t, err)
		assert.Contains(t, err.Error(), "VK_KHR_pipeline_executable_properties")
		assert.Nil(t, stats)
		return
	}
	require.NoError(t, err)
	require.NotEmpty(t, stats)
	for _, s := range stats {
		assert.NotEmpty(t, s.Name)
		assert.False(t, math.IsNaN(s.Value), s.Name)
	}
	t.Logf("saxpy: %+v", stats)
}

// Start submits without waiting; Wait completes the work, and the results
// are there afterwards; a recorder in flight waits before it is reused.
func TestStartWait(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	k := kernel(t, d, "saxpy", []vk.Access{vk.Read, vk.Write}, 8, map[uint32]uint32{0: 64})
	const n = 4096
	x, y := make([]float32, n), make([]float32, n)
	for i := range x {
		x[i], y[i] = rng.Float32(), rng.Float32()
	}
	bx, err := d.NewBuffer(4 * n)
	require.NoError(t, err)
	defer bx.Close()
	by, err := d.NewBuffer(4 * n)
	require.NoError(t, err)
	defer by.Close()
	require.NoError(t, bx.WriteF32(0, x))
	require.NoError(t, by.WriteF32(0, y))
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	require.NoError(t, rec.Dispatch(k, [3]uint32{n / 64, 1, 1}, push(uint32(n), float32(2)), bx.All(), by.All()))
	require.False(t, rec.Busy())
	require.NoError(t, rec.Start())
	require.True(t, rec.Busy())
	require.NoError(t, rec.Wait())
	require.False(t, rec.Busy())
	require.NoError(t, rec.Wait(), "waiting twice is harmless")
	got := make([]float32, n)
	require.NoError(t, by.ReadF32(0, got))
	for i := range got {
		require.Equal(t, 2*x[i]+y[i], got[i], "element %d", i)
	}
	// In flight again, then Reset waits before discarding.
	require.NoError(t, rec.Start())
	require.NoError(t, rec.Reset())
	require.False(t, rec.Busy())
	require.NoError(t, by.ReadF32(0, got))
	for i := range got {
		first := 2*x[i] + y[i]
		require.Equal(t, 2*x[i]+first, got[i], "element %d after the second run", i)
	}
}

// A decoding step's recording (Reset, begin, a dispatch with push
// constants, a barrier, a copy), its submission and the wait allocate
// nothing on the host: every call that takes arrays goes through the shim,
// not the binding's marshalling.
func TestRecordingAllocatesNothing(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	k := kernel(t, d, "saxpy", []vk.Access{vk.Read, vk.Write}, 8, map[uint32]uint32{0: 64})
	const n = 1024
	x, y := randF32(rng, n), randF32(rng, n)
	bx, err := d.NewBuffer(4 * n)
	require.NoError(t, err)
	defer bx.Close()
	by, err := d.NewBuffer(4 * n)
	require.NoError(t, err)
	defer by.Close()
	bc, err := d.NewBuffer(4 * n)
	require.NoError(t, err)
	defer bc.Close()
	require.NoError(t, bx.WriteF32(0, x))
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	p := push(uint32(n), float32(0.5))
	runs := 0
	step := func() {
		if err := rec.Reset(); err != nil {
			t.Fatal(err)
		}
		if err := rec.Dispatch(k, [3]uint32{n / 64, 1, 1}, p, bx.All(), by.All()); err != nil {
			t.Fatal(err)
		}
		rec.Barrier()
		if err := rec.CopyRange(bc, 0, by, 0, 4*n); err != nil {
			t.Fatal(err)
		}
		if err := rec.Start(); err != nil {
			t.Fatal(err)
		}
		if err := rec.Wait(); err != nil {
			t.Fatal(err)
		}
		runs++
	}
	require.NoError(t, by.WriteF32(0, y))
	step()
	allocs := testing.AllocsPerRun(5, step)
	require.Zero(t, allocs, "host allocations per recorded, submitted and waited step")
	// Every run added 0.5 x to y, and the copy saw the last.
	got := make([]float32, n)
	require.NoError(t, bc.ReadF32(0, got))
	for i := range got {
		want := y[i]
		for range runs {
			want += 0.5 * x[i]
		}
		require.InDelta(t, want, got[i], 1e-5*math.Max(1, math.Abs(float64(want))), "element %d after %d runs", i, runs)
	}
}

package vk_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/shaders"
	"github.com/deft-vk/deft/vk"
)

// openOwn opens a device of the test's own (validation on) and fails the
// test on any validation message, leaks reported at vkDestroyDevice included.
func openOwn(t *testing.T, cacheDir string) *vk.Device {
	t.Helper()
	gputest.Device(t) // loads the library and reports earlier messages
	d, err := vk.Open(vk.Options{Validation: true, PipelineCacheDir: cacheDir})
	require.NoError(t, err)
	return d
}

func TestCloseReleasesEverything(t *testing.T) {
	d := openOwn(t, "-")
	for i := 0; i < 3; i++ {
		_, err := d.NewBuffer(uint64(1000 * (i + 1)))
		require.NoError(t, err)
	}
	_, err := d.NewHostBuffer(4096)
	require.NoError(t, err)
	_, err = d.NewBuffer(300 << 20) // a dedicated allocation
	require.NoError(t, err)
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	code, err := shaders.SPIRV("saxpy")
	require.NoError(t, err)
	k, err := d.Kernel(vk.KernelSpec{Name: "saxpy", SPIRV: code, Bindings: []vk.Access{vk.Read, vk.Write}, PushSize: 8, Spec: map[uint32]uint32{0: 64}})
	require.NoError(t, err)
	b, err := d.NewBuffer(256)
	require.NoError(t, err)
	require.NoError(t, rec.Dispatch(k, [3]uint32{1, 1, 1}, make([]byte, 8), b.All(), b.All()))
	require.NoError(t, rec.Submit())
	// Nothing freed by hand: Close must release buffers, blocks, kernels and
	// recorders, or the validation layer reports leaked objects.
	require.NoError(t, d.Close())
	gputest.CheckValidation(t)
}

func TestPipelineCachePersistsAndSurvivesCorruption(t *testing.T) {
	dir := t.TempDir()
	code, err := shaders.SPIRV("copy")
	require.NoError(t, err)
	spec := vk.KernelSpec{Name: "copy", SPIRV: code, Bindings: []vk.Access{vk.Read, vk.Write}, PushSize: 4, Spec: map[uint32]uint32{0: 128}}

	d := openOwn(t, dir)
	path := d.PipelineCachePath()
	require.NotEmpty(t, path)
	_, err = d.Kernel(spec)
	require.NoError(t, err)
	require.NoError(t, d.Close())
	saved, err := os.ReadFile(path)
	require.NoError(t, err, "closing the device writes the cache")
	require.Greater(t, len(saved), 32)

	for name, junk := range map[string][]byte{
		"garbage":   []byte("not a pipeline cache at all"),
		"truncated": saved[:len(saved)/2],
		"bit flip":  append(append([]byte{}, saved[:40]...), append([]byte{saved[40] ^ 0xff}, saved[41:]...)...),
	} {
		require.NoError(t, os.WriteFile(path, junk, 0o644))
		d := openOwn(t, dir)
		_, err := d.Kernel(spec)
		require.NoError(t, err, "%s cache file must be ignored", name)
		require.NoError(t, d.Close())
		rewritten, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.NotEqual(t, junk, rewritten, "%s: the cache is written afresh", name)
	}
	assert.FileExists(t, filepath.Join(dir, filepath.Base(path)))
}

// A buffer above 4 GiB where the device has room for it (uint32 overflow
// in sizes or offsets would show), else the largest that fits half a heap.
func TestLargeBuffer(t *testing.T) {
	d := gputest.Device(t)
	var heap uint64
	for _, h := range d.Info.MemoryHeaps {
		if h.DeviceLocal {
			heap = max(heap, h.Size)
		}
	}
	size := min(uint64(4<<30)+(64<<20)+12, heap/2)
	t.Logf("buffer of %d bytes (device-local heap %d)", size, heap)
	b, err := d.NewBuffer(size)
	require.NoError(t, err)
	defer b.Close()
	r := gputest.Rand(t)
	for _, off := range []uint64{0, size/2 + 3, size - 1000} {
		in := make([]byte, 1000)
		for i := range in {
			in[i] = byte(r.Uint32())
		}
		require.NoError(t, b.Write(off, in))
		out := make([]byte, 1000)
		require.NoError(t, b.Read(off, out))
		require.Equal(t, in, out, "offset %d", off)
	}
	// Bindings cannot exceed the storage-buffer range: a clear error.
	if size > uint64(d.Info.MaxStorageBufferRange) {
		code, err := shaders.SPIRV("copy")
		require.NoError(t, err)
		k, err := d.Kernel(vk.KernelSpec{Name: "copy", SPIRV: code, Bindings: []vk.Access{vk.Read, vk.Write}, PushSize: 4, Spec: map[uint32]uint32{0: 128}})
		require.NoError(t, err)
		rec, err := d.NewRecorder()
		require.NoError(t, err)
		defer rec.Close()
		err = rec.Dispatch(k, [3]uint32{1, 1, 1}, make([]byte, 4), b.All(), b.Sub(0, 1024))
		require.ErrorContains(t, err, "storage-buffer range")
		require.NoError(t, rec.Dispatch(k, [3]uint32{1, 1, 1}, make([]byte, 4), b.Sub((size-4096)&^255, 2048), b.Sub(0, 2048)))
	}
}

package probe_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/probe"
)

func TestRunSmall(t *testing.T) {
	d := gputest.Device(t)
	start := time.Now().UTC()
	res, err := probe.Run(d, probe.Options{Bytes: 8 << 20, Runs: 3})
	require.NoError(t, err)
	t.Logf("%.2f GB/s median, %.2f GB/s best, saxpy %.2f GB/s", res.BytesPerSec/1e9, res.PeakPerSec/1e9, res.SaxpyPerSec/1e9)
	assert.Positive(t, res.BytesPerSec)
	assert.Positive(t, res.SaxpyPerSec)
	assert.Positive(t, res.FMAFlopsPerSec)
	t.Logf("fp32 FMA %.1f GFLOP/s", res.FMAFlopsPerSec/1e9)
	assert.Positive(t, res.BestNs)
	assert.GreaterOrEqual(t, res.MedianNs, res.BestNs)
	assert.GreaterOrEqual(t, res.PeakPerSec, res.BytesPerSec)
	assert.Equal(t, uint64(8<<20), res.BufferBytes)
	assert.Equal(t, 3, res.Runs)
	assert.Equal(t, d.Info.Name, res.Device)
	assert.Equal(t, d.Info.UUID, res.UUID)
	assert.NotEmpty(t, res.TimingSource)
	assert.False(t, res.When.Before(start.Add(-time.Second)), "When %v before the run started at %v", res.When, start)
	// The rates are the bytes moved over the measured times.
	assert.InEpsilon(t, float64(2*res.BufferBytes)/(float64(res.MedianNs)*1e-9), res.BytesPerSec, 1e-9)
	assert.InEpsilon(t, float64(2*res.BufferBytes)/(float64(res.BestNs)*1e-9), res.PeakPerSec, 1e-9)
}

func TestRunOddSizeAndDefaults(t *testing.T) {
	d := gputest.Device(t)
	// A size that is not a multiple of 16 is rounded down; Runs 0 means the default 20.
	res, err := probe.Run(d, probe.Options{Bytes: 2<<20 + 7})
	require.NoError(t, err)
	assert.Equal(t, uint64(2<<20), res.BufferBytes)
	assert.Equal(t, 20, res.Runs)
	assert.Positive(t, res.BytesPerSec)
	assert.GreaterOrEqual(t, res.MedianNs, res.BestNs)
}

func TestRunTooSmall(t *testing.T) {
	d := gputest.Device(t)
	_, err := probe.Run(d, probe.Options{Bytes: 64 << 10, Runs: 2})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "too small to measure memory bandwidth")
}

func TestSaveLoadRoundTrip(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	rng := gputest.Rand(t)
	r := &probe.Result{
		Device: "test device", UUID: "0123456789abcdef0123456789abcdef", Driver: "test driver 1.0",
		BufferBytes: 8 << 20, Runs: 3 + rng.IntN(20), MedianNs: 1000 + rng.Int64N(1e6), BestNs: 900,
		BytesPerSec: 1e9 * (1 + rng.Float64()), PeakPerSec: 2e9, SaxpyPerSec: 1.5e9,
		When: time.Now().UTC().Truncate(time.Second), TimingSource: "GPU timestamps",
	}
	require.NoError(t, probe.Save(r))

	path, err := probe.CachePath(r.UUID)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(path, cache+string(filepath.Separator)), "cache path %s outside %s", path, cache)
	require.FileExists(t, path)

	got, err := probe.Load(r.UUID)
	require.NoError(t, err)
	assert.True(t, r.When.Equal(got.When), "When %v, want %v", got.When, r.When)
	got.When = r.When
	assert.Equal(t, *r, *got)

	// Saving again replaces the result.
	r2 := *r
	r2.BytesPerSec *= 2
	require.NoError(t, probe.Save(&r2))
	got, err = probe.Load(r.UUID)
	require.NoError(t, err)
	assert.Equal(t, r2.BytesPerSec, got.BytesPerSec)

	// Another device has no saved result.
	_, err = probe.Load("ffffffffffffffffffffffffffffffff")
	require.Error(t, err)
	assert.True(t, errors.Is(err, fs.ErrNotExist), "%v", err)
}

func TestRunSaveLoad(t *testing.T) {
	d := gputest.Device(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	res, err := probe.Run(d, probe.Options{Bytes: 8 << 20, Runs: 3})
	require.NoError(t, err)
	require.NoError(t, probe.Save(res))
	got, err := probe.Load(d.Info.UUID)
	require.NoError(t, err)
	assert.Equal(t, res.BytesPerSec, got.BytesPerSec)
	assert.Equal(t, res.MedianNs, got.MedianNs)
	assert.True(t, res.When.Equal(got.When))
}

func TestLoadRejectsBadFiles(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	const uuid = "00112233445566778899aabbccddeeff"
	path, err := probe.CachePath(uuid)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))

	for _, tc := range []struct {
		name, content, want string
	}{
		{"truncated JSON", `{"device": "x", "uuid": "` + uuid + `", "bytes_per_sec`, "load probe"},
		{"not JSON", "\x00\x01garbage", "load probe"},
		{"wrong type", `{"uuid": "` + uuid + `", "bytes_per_second": "fast"}`, "load probe"},
		{"other device", `{"uuid": "ffff", "bytes_per_second": 1e9}`, "not a result for device " + uuid},
		{"no bandwidth", `{"uuid": "` + uuid + `", "bytes_per_second": 0}`, "not a result for device"},
		{"negative bandwidth", `{"uuid": "` + uuid + `", "bytes_per_second": -5}`, "not a result for device"},
		{"empty", "", "load probe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o644))
			r, err := probe.Load(uuid)
			require.Error(t, err)
			assert.Nil(t, r)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), path)
		})
	}
}

// Runs beyond MaxRuns are refused with a clear message before any work
// (they used to fail on an internal timestamp limit).
func TestRunRejectsRuns(t *testing.T) {
	d := gputest.Device(t)
	for _, runs := range []int{probe.MaxRuns + 1, -1} {
		_, err := probe.Run(d, probe.Options{Bytes: 1 << 20, Runs: runs})
		require.Error(t, err)
		assert.Contains(t, err.Error(), fmt.Sprintf("%d runs: want 1..%d", runs, probe.MaxRuns))
	}
}

func TestDefaultBytes(t *testing.T) {
	d := gputest.Device(t)
	def := probe.DefaultBytes(&d.Info)
	assert.LessOrEqual(t, def, uint64(256<<20))
	assert.LessOrEqual(t, def, uint64(d.Info.MaxStorageBufferRange))
	assert.Zero(t, def%16)
	assert.GreaterOrEqual(t, def, uint64(1<<20), "the default must be measurable")
}

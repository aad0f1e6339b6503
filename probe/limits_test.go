package probe

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/vk"
)

// MaxRuns is the true limit of both timing loops: the streaming probes
// (one untimed run first) and the FMA probe (runs+1 timed) fit MaxRuns
// runs into one command buffer's timestamps. A 16-byte copy keeps it fast.
func TestMaxRunsFitTimestamps(t *testing.T) {
	d := gputest.Device(t)
	k, err := kernels.Copy.Pipeline(d, kernels.SpecValues{"local_size_x": 64})
	require.NoError(t, err)
	src, err := d.NewBuffer(16)
	require.NoError(t, err)
	defer src.Close()
	dst, err := d.NewBuffer(16)
	require.NoError(t, err)
	defer dst.Close()
	dispatch := func(rec *vk.Recorder) error {
		return k.Dispatch(rec, [3]uint32{1, 1, 1}, kernels.CopyPush{N: 1}, src.All(), dst.All())
	}
	times, err := timeDispatches(d, "copy", 1, MaxRuns, nil, dispatch) // as timeKernel
	require.NoError(t, err)
	require.Len(t, times, MaxRuns)
	times, err = timeDispatches(d, "fma", 0, MaxRuns+1, nil, dispatch) // as timeFMA
	require.NoError(t, err)
	require.Len(t, times, MaxRuns+1)
	_, err = timeDispatches(d, "copy", 1, MaxRuns+1, nil, dispatch)
	require.Error(t, err, "one more run must not fit")
}

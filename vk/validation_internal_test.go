package vk

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	vk "github.com/vulkan-go/vulkan"
)

// The validation sink must really catch misuse, or a quiet test suite would
// prove nothing. Record an invalid fill (offset not a multiple of 4) without
// submitting it and expect the layer to complain.
func TestValidationLayerReportsMisuse(t *testing.T) {
	d, err := Open(Options{Validation: true, PipelineCacheDir: "-"})
	require.NoError(t, err, "these tests need a Vulkan device with the validation layer (tools/deps.sh)")
	defer d.Close()
	ValidationMessages() // start clean
	b, err := d.NewBuffer(64)
	require.NoError(t, err)
	r, err := d.NewRecorder()
	require.NoError(t, err)
	require.NoError(t, r.begin())
	vk.CmdFillBuffer(r.cmd, b.handle, 2, 8, 0)
	require.NoError(t, r.Reset())
	msgs := ValidationMessages()
	require.NotEmpty(t, msgs, "the validation layer reported nothing for a misaligned vkCmdFillBuffer")
	require.True(t, strings.Contains(strings.Join(msgs, "\n"), "dstOffset"), "messages: %v", msgs)
}

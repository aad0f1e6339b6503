package kernels

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/vk"
)

// Variants are chosen in order of preference by the device's features,
// overrides force one, and a forced variant the device cannot run, or one
// that does not exist, is an error.
func TestChooseVariant(t *testing.T) {
	needsCoopMat := func(info *vk.DeviceInfo) error {
		if !info.CooperativeMatrix {
			return errors.New("no cooperative matrices")
		}
		return nil
	}
	c := &Contract{Name: "partial_attn", Variants: []Variant{
		{Name: "coopmat", Module: "x_coopmat", Requires: needsCoopMat},
		{Name: "scalar", Module: "x"},
	}}
	gpu := &vk.DeviceInfo{Name: "gpu", CooperativeMatrix: true}
	cpu := &vk.DeviceInfo{Name: "cpu"}
	t.Cleanup(func() { require.NoError(t, SetOverride("")) })

	require.NoError(t, SetOverride(""))
	ch, err := c.Choose(gpu)
	require.NoError(t, err)
	require.Equal(t, "coopmat", ch.Variant.Name)
	require.False(t, ch.Forced)
	ch, err = c.Choose(cpu)
	require.NoError(t, err)
	require.Equal(t, "scalar", ch.Variant.Name)
	require.Len(t, ch.Rejected, 1, "why coopmat was passed over")

	require.NoError(t, SetOverride("scalar"))
	ch, err = c.Choose(gpu)
	require.NoError(t, err)
	require.Equal(t, "scalar", ch.Variant.Name)
	require.True(t, ch.Forced)

	require.NoError(t, SetOverride("partial_attn=coopmat"))
	_, err = c.Choose(cpu)
	require.ErrorContains(t, err, "forced but unsupported")

	require.Error(t, SetOverride("nosuchvariant"))
	require.Error(t, SetOverride("nosuchkernel=scalar"))
	require.Error(t, SetOverride("partial_attn="))

	// A global variant that a kernel lacks leaves that kernel's choice alone.
	require.NoError(t, SetOverride("coopmat"))
	only := &Contract{Name: "rmsnorm", Variants: []Variant{{Name: "scalar", Module: "y"}}}
	ch, err = only.Choose(gpu)
	require.NoError(t, err)
	require.Equal(t, "scalar", ch.Variant.Name)
}

package kernels

import (
	"fmt"

	"github.com/deft-vk/deft/vk"
)

// f16CoopMatShape picks a subgroup-scope f16 x f16 + f32 -> f32
// cooperative-matrix shape the device reports, with M, N and K of 8, 16 or
// 32 (they divide the kernels' tiles) and, when maxM > 0, M at most maxM.
// 16x16x16 is preferred, then the largest.
func f16CoopMatShape(info *vk.DeviceInfo, maxM uint32) (vk.CoopMatShape, error) {
	var best vk.CoopMatShape
	found := false
	ok := func(v uint32) bool { return v == 8 || v == 16 || v == 32 }
	for _, s := range info.CoopMatShapes {
		if s.A != "f16" || s.B != "f16" || s.C != "f32" || s.R != "f32" || s.Scope != "subgroup" || s.Saturating {
			continue
		}
		if !ok(s.M) || !ok(s.N) || !ok(s.K) || (maxM > 0 && s.M > maxM) {
			continue
		}
		if s.M == 16 && s.N == 16 && s.K == 16 {
			return s, nil
		}
		if !found || s.M*s.N*s.K > best.M*best.N*best.K {
			best, found = s, true
		}
	}
	if !found {
		return vk.CoopMatShape{}, fmt.Errorf("no subgroup f16*f16+f32->f32 cooperative-matrix shape with M, N, K in {8, 16, 32} (device reports %d shapes)", len(info.CoopMatShapes))
	}
	return best, nil
}

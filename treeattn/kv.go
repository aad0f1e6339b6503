package treeattn

import (
	"fmt"

	"github.com/deft-vk/deft/internal/half"
	"github.com/deft-vk/deft/vk"
)

// UploadKV puts a K or V pool ([slot][kv_head][dim] float32 values) on d in
// the KV type's layout; fp16 pools are rounded to nearest even. bits, when
// not nil, are the fp16 values already converted (they must be len(values)).
func UploadKV(d *vk.Device, kv KVType, values []float32, bits []uint16) (*vk.Buffer, error) {
	if kv == KVF16 && bits == nil {
		bits = half.FromFloat32Slice(values)
	}
	if kv == KVF16 && len(bits) != len(values) {
		return nil, fmt.Errorf("upload KV: %d fp16 values for %d floats", len(bits), len(values))
	}
	b, err := d.NewBuffer(uint64(len(values)) * uint64(kv.Bytes()))
	if err != nil {
		return nil, fmt.Errorf("upload KV: %w", err)
	}
	if kv == KVF16 {
		err = b.WriteF16(0, bits)
	} else {
		err = b.WriteF32(0, values)
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("upload KV: %w", err)
	}
	return b, nil
}

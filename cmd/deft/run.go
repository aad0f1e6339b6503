package main

import (
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// runAttention uploads the inputs, runs the plan once and reads the output.
func runAttention(d *vk.Device, plan *treeattn.Plan, in *attentionInputs) ([]float32, error) {
	dp, err := plan.Upload(d)
	if err != nil {
		return nil, err
	}
	defer dp.Close()
	var bufs []*vk.Buffer
	defer func() {
		for _, b := range bufs {
			b.Close()
		}
	}()
	newBuf := func(size uint64) (*vk.Buffer, error) {
		b, err := d.NewBuffer(size)
		if err == nil {
			bufs = append(bufs, b)
		}
		return b, err
	}
	q, err := newBuf(plan.QueryBytes())
	if err != nil {
		return nil, err
	}
	if err := q.WriteF32(0, in.q); err != nil {
		return nil, err
	}
	kvBytes := uint64(in.slots) * plan.KVRowBytes()
	k, err := newBuf(kvBytes)
	if err != nil {
		return nil, err
	}
	v, err := newBuf(kvBytes)
	if err != nil {
		return nil, err
	}
	if in.kv == treeattn.KVF16 {
		err = k.WriteF16(0, in.k.F16)
		if err == nil {
			err = v.WriteF16(0, in.v.F16)
		}
	} else {
		err = k.WriteF32(0, in.k.F32)
		if err == nil {
			err = v.WriteF32(0, in.v.F32)
		}
	}
	if err != nil {
		return nil, err
	}
	out, err := newBuf(plan.QueryBytes())
	if err != nil {
		return nil, err
	}
	rec, err := d.NewRecorder()
	if err != nil {
		return nil, err
	}
	defer rec.Close()
	if err := dp.Run(rec, q, k, v, out); err != nil {
		return nil, err
	}
	if err := rec.Submit(); err != nil {
		return nil, err
	}
	res := make([]float32, plan.QueryBytes()/4)
	if err := out.ReadF32(0, res); err != nil {
		return nil, err
	}
	return res, nil
}

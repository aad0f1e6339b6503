package main

import (
	"fmt"

	"github.com/deft-vk/deft/internal/npy"
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
	// Scores beyond fp32 are computed in a larger unit instead of overflowing.
	if err := dp.SetScoreBound(treeattn.ScoreBound(in.shape, in.q, in.k.F32, in.scale)); err != nil {
		return nil, fmt.Errorf("attention: %w", err)
	}
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
	for _, src := range []*npy.Array{in.k, in.v} {
		b, err := treeattn.UploadKV(d, in.kv, src.F32, src.F16)
		if err != nil {
			return nil, err
		}
		bufs = append(bufs, b)
	}
	k, v := bufs[len(bufs)-2], bufs[len(bufs)-1]
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

package treeattn

import (
	"fmt"

	"github.com/deft-vk/deft/vk"
)

// Workspace is a decoding session's device memory for tree attention,
// reused step after step: metadata and partial-result buffers that only
// grow, and two host-visible staging buffers, so the host can write step
// n+1's metadata while the GPU still copies step n's. Each step's metadata
// upload is recorded in the step's own command buffer. In steady state a
// step allocates no device memory. A Workspace is not safe for concurrent
// use.
type Workspace struct {
	d                  *vk.Device
	meta, partO, partL *vk.Buffer
	counters           *vk.Buffer // partial_attn's fused-reduction counters, zero between dispatches
	staging            [2]*vk.Buffer
	stagingRec         [2]*vk.Recorder // the recorder whose upload reads each staging buffer
	next               int
	dp                 DevicePlan
	lastKey            pipelineKey
	zeroCounters       bool
}

// pipelineKey is what a plan's kernels depend on.
type pipelineKey struct {
	shape   Shape
	tiles   Tiles
	kv      KVType
	variant string
	coopMat CoopMat
}

// NewWorkspace makes an empty workspace on d; buffers come with the first
// steps.
func NewWorkspace(d *vk.Device) *Workspace { return &Workspace{d: d} }

// Load prepares p to run from the workspace: it writes p's metadata to a
// staging buffer and records its upload into rec, ahead of the step's
// dispatches (recorded after Load). The returned DevicePlan is valid until
// the next Load. rec must not be submitted between Load and the step's
// dispatches.
func (ws *Workspace) Load(rec *vk.Recorder, p *Plan) (*DevicePlan, error) {
	if ws.d == nil {
		return nil, fmt.Errorf("load plan: workspace is closed")
	}
	if rec == nil || p == nil || len(p.meta) == 0 {
		return nil, fmt.Errorf("load plan: nil recorder or empty plan")
	}
	dp := &ws.dp
	key := pipelineKey{p.Shape, p.Tiles, p.KV, p.Variant, p.Limits.CoopMat}
	attns, reduce := dp.attns, dp.reduce
	extra, partials, err := dp.prepare(ws.d, p, defaultUpload, false)
	if err != nil {
		return nil, fmt.Errorf("load plan: %w", err)
	}
	// Pipelines are looked up only when the shapes change (the lookup
	// formats a cache key); the item classes follow from the key.
	if len(attns) == 0 || key != ws.lastKey {
		if attns, reduce, err = classPipelines(ws.d, p, dp.classes, defaultUpload, attns); err != nil {
			return nil, fmt.Errorf("load plan: %w", err)
		}
		ws.lastKey = key
	}
	dp.attns, dp.reduce = attns, reduce
	metaBytes := uint64(len(p.meta)+len(extra)) * 4
	outBytes, lseBytes := p.partialBytes(partials)
	i := ws.next
	// The staging buffer's previous upload must have run before the host
	// overwrites it.
	if r := ws.stagingRec[i]; r != nil && r != rec {
		if err := r.Wait(); err != nil {
			return nil, fmt.Errorf("load plan: %w", err)
		}
	}
	grow := func(b **vk.Buffer, need uint64, host bool) error {
		if *b != nil && (*b).Size() >= need {
			return nil
		}
		// Work in flight may still use the old buffer.
		for _, r := range ws.stagingRec {
			if r != nil {
				if err := r.Wait(); err != nil {
					return err
				}
			}
		}
		size := max(need+need/2, 4096)
		var nb *vk.Buffer
		var err error
		if host {
			nb, err = ws.d.NewHostBuffer(size)
		} else {
			nb, err = ws.d.NewBuffer(size)
		}
		if err != nil {
			return err
		}
		(*b).Close()
		*b = nb
		return nil
	}
	for _, g := range []struct {
		b    **vk.Buffer
		need uint64
		host bool
	}{{&ws.staging[i], metaBytes, true}, {&ws.meta, metaBytes, false}, {&ws.partO, outBytes, false}, {&ws.partL, lseBytes, false}} {
		if err := grow(g.b, g.need, g.host); err != nil {
			return nil, fmt.Errorf("load plan: %w", err)
		}
	}
	if old := ws.counters; old == nil || old.Size() < p.counterBytes() {
		if err := grow(&ws.counters, p.counterBytes(), false); err != nil {
			return nil, fmt.Errorf("load plan: %w", err)
		}
		ws.zeroCounters = true // new memory: zeroed by the step's first dispatch
	}
	if err := ws.staging[i].WriteU32(0, p.meta); err != nil {
		return nil, fmt.Errorf("load plan: %w", err)
	}
	if len(extra) > 0 {
		if err := ws.staging[i].WriteU32(uint64(len(p.meta)), extra); err != nil {
			return nil, fmt.Errorf("load plan: %w", err)
		}
	}
	// The previous step may still read the metadata and partial buffers.
	rec.Barrier()
	if err := rec.CopyRange(ws.meta, 0, ws.staging[i], 0, metaBytes); err != nil {
		return nil, fmt.Errorf("load plan: %w", err)
	}
	ws.stagingRec[i] = rec
	ws.next = 1 - i
	dp.meta, dp.partO, dp.partL, dp.counters, dp.owned = ws.meta, ws.partO, ws.partL, ws.counters, false
	// New counters are zeroed by the first dispatch recorded after this.
	dp.zeroCounters = dp.zeroCounters || ws.zeroCounters
	ws.zeroCounters = false
	return dp, nil
}

// Close waits for the workspace's uploads and frees its buffers.
func (ws *Workspace) Close() {
	for _, r := range ws.stagingRec {
		if r != nil {
			_ = r.Wait()
		}
	}
	for _, b := range []*vk.Buffer{ws.meta, ws.partO, ws.partL, ws.counters, ws.staging[0], ws.staging[1]} {
		b.Close()
	}
	*ws = Workspace{}
}

// Bytes is the device and staging memory the workspace holds now.
func (ws *Workspace) Bytes() uint64 {
	var n uint64
	for _, b := range []*vk.Buffer{ws.meta, ws.partO, ws.partL, ws.counters, ws.staging[0], ws.staging[1]} {
		if b != nil {
			n += b.Size()
		}
	}
	return n
}

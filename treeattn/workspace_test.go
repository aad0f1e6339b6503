package treeattn_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/conformance"
	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

// Decoding steps through one Workspace, each planned while the previous
// one runs on the GPU (two recorders in turn), give the same bits as the
// same plans uploaded on their own, and match the reference; the trees
// grow from step to step, so the workspace's buffers grow too.
func TestWorkspaceStepsMatchUpload(t *testing.T) {
	d := gputest.Device(t)
	rng := gputest.Rand(t)
	shape := treeattn.Shape{QHeads: 4, KVHeads: 2, HeadDim: 32}
	lim := treeattn.LimitsOf(d.Info)
	ws := treeattn.NewWorkspace(d)
	defer ws.Close()
	var recs [2]*vk.Recorder
	for i := range recs {
		r, err := d.NewRecorder()
		require.NoError(t, err)
		defer r.Close()
		recs[i] = r
	}
	var planner treeattn.Planner
	type step struct {
		out  *vk.Buffer
		want []float32
		ref  []float64
	}
	var inFlight *step
	finish := func(s *step, rec *vk.Recorder) {
		require.NoError(t, rec.Wait())
		got := make([]float32, len(s.want))
		require.NoError(t, s.out.ReadF32(0, got))
		require.Equal(t, s.want, got, "workspace output differs from the uploaded plan's")
		require.LessOrEqual(t, treeattn.RelativeL2(got, s.ref), conformance.Tolerance(treeattn.KVF32))
		s.out.Close()
	}
	for n := range 6 {
		branches, branchLen := 2+3*n, 5+7*n
		tree := treeattn.FewShotTree(40+10*n, branches, branchLen)
		if n%2 == 1 {
			tree = treeattn.RandomTree(rng, treeattn.GenOptions{MaxNodes: 10 + n, MaxNodeTokens: 60, MaxQueries: 20, ShuffleSlots: true})
		}
		tree.AssignContiguousSlots()
		in := conformance.NewInputs(rng, tree, shape, treeattn.KVF32)
		cfg := treeattn.Config{Method: treeattn.MethodFlatten, Shape: shape, KV: treeattn.KVF32, Limits: lim}
		ref, err := treeattn.Reference(tree, shape, in.Q, in.K, in.V, shape.DefaultScale())
		require.NoError(t, err)
		q, err := d.NewBuffer(uint64(len(in.Q)) * 4)
		require.NoError(t, err)
		defer q.Close()
		require.NoError(t, q.WriteF32(0, in.Q))
		k, v, err := in.Upload(d, treeattn.KVF32)
		require.NoError(t, err)
		defer k.Close()
		defer v.Close()

		// The same plan uploaded on its own, run to completion.
		own, err := treeattn.NewPlan(tree, cfg)
		require.NoError(t, err)
		dp, err := own.Upload(d)
		require.NoError(t, err)
		ownOut, err := d.NewBuffer(own.QueryBytes())
		require.NoError(t, err)
		defer ownOut.Close()
		solo, err := d.NewRecorder()
		require.NoError(t, err)
		require.NoError(t, dp.Run(solo, q, k, v, ownOut))
		require.NoError(t, solo.Submit())
		solo.Close()
		dp.Close()
		want := make([]float32, len(in.Q))
		require.NoError(t, ownOut.ReadF32(0, want))

		// Through the workspace, planned while the previous step runs.
		rec := recs[n%2]
		require.NoError(t, rec.Reset())
		plan, err := planner.Plan(tree, cfg)
		require.NoError(t, err)
		wdp, err := ws.Load(rec, plan)
		require.NoError(t, err)
		out, err := d.NewBuffer(plan.QueryBytes())
		require.NoError(t, err)
		require.NoError(t, out.FillF32(0, uint64(len(in.Q)), float32(math.NaN())))
		require.NoError(t, wdp.Run(rec, q, k, v, out))
		if inFlight != nil {
			finish(inFlight, recs[(n+1)%2])
		}
		require.NoError(t, rec.Start())
		inFlight = &step{out: out, want: want, ref: ref}
		t.Logf("step %d: %d queries, %d tokens, %d items", n, len(tree.Queries), tree.TotalTokens(), plan.Items)
	}
	finish(inFlight, recs[1])
}

// Planning a step (from scratch, and the next step incrementally) and
// writing its metadata into the workspace allocates nothing on the host
// once the workspace has grown: recording goes through vk's shim, not the
// Vulkan binding's marshalling (vk's TestRecordingAllocatesNothing covers
// dispatches, submission and waiting).
func TestWorkspaceLoadAllocatesNothing(t *testing.T) {
	d := gputest.Device(t)
	shape := treeattn.Shape{QHeads: 32, KVHeads: 8, HeadDim: 128}
	tree := treeattn.FewShotTree(4000, 50, 400)
	tree.AssignContiguousSlots()
	cfg := treeattn.Config{Method: treeattn.MethodFlatten, Shape: shape, Limits: treeattn.LimitsOf(d.Info)}
	ws := treeattn.NewWorkspace(d)
	defer ws.Close()
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	next := treeattn.NextStep(tree)
	var planner treeattn.Planner
	step := func() {
		require.NoError(t, rec.Reset())
		plan, err := planner.Plan(tree, cfg)
		require.NoError(t, err)
		_, err = ws.Load(rec, plan)
		require.NoError(t, err)
		require.NoError(t, rec.Reset())
		plan, err = planner.PlanNext(next, cfg, true)
		require.NoError(t, err)
		_, err = ws.Load(rec, plan)
		require.NoError(t, err)
	}
	step()
	step()
	allocs := testing.AllocsPerRun(5, step)
	a, err := d.NewBuffer(64)
	require.NoError(t, err)
	defer a.Close()
	b, err := d.NewBuffer(64)
	require.NoError(t, err)
	defer b.Close()
	record := func() {
		require.NoError(t, rec.Reset())
		rec.Barrier()
		require.NoError(t, rec.CopyRange(a, 0, b, 0, 64))
	}
	record()
	recording := testing.AllocsPerRun(5, record)
	t.Logf("%.0f host allocations per planned and loaded step, %.0f of them recording a barrier and a copy", allocs, recording)
	require.Zero(t, recording, "recording a barrier and a copy allocates")
	require.Zero(t, allocs, "planning and loading allocate")
}

package kvpool

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/treeattn"
)

// Set reuses one SlotList across steps: rows written through it land in
// the slots of the latest Set, and bad slots are refused as NewSlotList
// refuses them.
func TestSlotListSet(t *testing.T) {
	cfg := testConfig(treeattn.KVF32, 4, 8)
	p, d := newPool(t, cfg)
	seq := p.NewSequence()
	first, err := p.Append(seq, 2)
	require.NoError(t, err)
	sl, err := p.NewSlotList(first)
	require.NoError(t, err)
	defer sl.Close()
	more, err := p.Append(seq, 9) // more rows than the list's buffer holds
	require.NoError(t, err)
	require.NoError(t, sl.Set(more))
	require.Equal(t, more, sl.Slots())

	row := cfg.KVHeads * cfg.HeadDim
	k := make([]float32, len(more)*row)
	for i := range k {
		k[i] = float32(i + 1)
	}
	kb, err := d.NewBuffer(uint64(4 * len(k)))
	require.NoError(t, err)
	defer kb.Close()
	require.NoError(t, kb.WriteF32(0, k))
	rec, err := d.NewRecorder()
	require.NoError(t, err)
	defer rec.Close()
	require.NoError(t, p.Write(rec, 1, sl, kb, kb))
	require.NoError(t, rec.Submit())
	got := make([]float32, row)
	for i, s := range more {
		require.NoError(t, p.K(1).ReadF32(uint64(int(s)*row), got))
		require.Equal(t, k[i*row:(i+1)*row], got, "slot %d", s)
	}

	require.ErrorContains(t, sl.Set(nil), "no slots")
	require.ErrorContains(t, sl.Set([]int32{more[0], more[0]}), "twice")
	require.ErrorContains(t, sl.Set([]int32{int32(p.NumSlots())}), "outside")
	require.Equal(t, more, sl.Slots(), "a refused Set changes nothing")
}

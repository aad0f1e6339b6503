package kvpool

import (
	"errors"
	"fmt"
	"slices"
)

// Set replaces the list's slots, checked as NewSlotList checks them, and
// uploads them into its device buffer, which is only reallocated when it is
// too small: a decoder keeps one SlotList for all its steps instead of
// allocating one per step. Recorded writes that use the list must have run.
func (s *SlotList) Set(slots []int32) error {
	p := s.p
	switch {
	case p.d == nil || p.k == nil || s.buf == nil:
		return errors.New("kvpool: set slot list: the list or its pool is closed")
	case len(slots) == 0:
		return errors.New("kvpool: set slot list: no slots")
	}
	if err := p.checkSlots(slots); err != nil {
		return fmt.Errorf("kvpool: set slot list: %w", err)
	}
	sorted := slices.Clone(slots)
	slices.Sort(sorted)
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return fmt.Errorf("kvpool: set slot list: slot %d appears twice", sorted[i])
		}
	}
	if need := uint64(len(slots)) * 4; s.buf.Size() < need {
		grown := max(need, 2*s.buf.Size())
		buf, err := p.d.NewBuffer(grown)
		if err != nil {
			return fmt.Errorf("kvpool: set slot list: %w", err)
		}
		s.buf.Close()
		s.buf = buf
	}
	words := make([]uint32, len(slots))
	for i, v := range slots {
		words[i] = uint32(v)
	}
	if err := s.buf.WriteU32(0, words); err != nil {
		return fmt.Errorf("kvpool: set slot list: %w", err)
	}
	s.slots = append(s.slots[:0], slots...)
	return nil
}

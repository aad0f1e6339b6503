package model

import (
	"testing"

	"github.com/deft-vk/deft/gguf"
	"github.com/deft-vk/deft/llama"
	"github.com/deft-vk/deft/llama/reference"
)

// The tests compare the GPU forward pass with package llama/reference, the
// project's float64 CPU forward pass of the same GGUF file.

type refModel struct{ m *reference.Model }

type refSeq struct{ s *reference.Sequence }

func newRef(t *testing.T, f *gguf.File) *refModel {
	t.Helper()
	cfg, err := llama.ConfigFrom(f)
	if err != nil {
		t.Fatalf("reference config: %v", err)
	}
	m, err := reference.New(cfg, f)
	if err != nil {
		t.Fatalf("reference model: %v", err)
	}
	return &refModel{m}
}

func (r *refModel) newSeq() *refSeq { return &refSeq{s: r.m.NewSequence()} }

// eval appends token and returns the logits (a failure panics: the
// reference only fails on programming errors once built).
func (s *refSeq) eval(token int32) []float64 {
	logits, err := s.s.Eval(token)
	if err != nil {
		panic(err)
	}
	return logits
}

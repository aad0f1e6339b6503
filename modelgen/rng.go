package modelgen

// The counter-based generator, written once here and once in
// shaders/include/modelgen.glsl: every random word is a pure function of
// (tensor key, word index), so the CPU and the GPU make the same bytes in
// any order and in parallel. Only 32-bit integer operations are used, so
// both sides agree bit for bit.

// hash32 is PCG's RXS-M-XS output function applied to one LCG step: a
// bijection of uint32 with good avalanche.
func hash32(x uint32) uint32 {
	s := x*747796405 + 2891336453
	w := ((s >> ((s >> 28) + 4)) ^ s) * 277803737
	return (w >> 22) ^ w
}

// word returns the i-th random word of the tensor with key k.
func word(k, i uint32) uint32 {
	return hash32(k ^ hash32(i))
}

// nameHash is FNV-1a of a tensor name.
func nameHash(name string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return h
}

// TensorKey is the generator key of a tensor: a hash of the seed and the
// tensor's name, so a tensor's bytes do not depend on which others exist.
func TensorKey(seed uint64, name string) uint32 {
	return hash32(uint32(seed) ^ hash32(uint32(seed>>32)^hash32(nameHash(name))))
}

package gguf

import "math"

// The K-quant reference quantizers (ggml's quantize_row_q4_K_ref,
// quantize_row_q5_K_ref and quantize_row_q6_K_ref): a search for the
// sub-block scales that minimise a weighted squared error, then 6- or
// 8-bit quantization of those scales against one f16 super-block scale,
// then a final rounding of every element against its quantized scale.

// quantQ4_K encodes one super-block of 256 elements.
func quantQ4_K(b []byte, x []float32) {
	var L [qkK]uint8
	quantScaleMinK(b[:16], x, &L, 15, -1, 20)
	qs := b[16:]
	for g := range 4 {
		for l := range 32 {
			qs[32*g+l] = L[64*g+l] | L[64*g+l+32]<<4
		}
	}
}

// quantQ5_K encodes one super-block of 256 elements (ggml's
// quantize_row_q5_K_ref): Q4_K's search with 32 levels, the fifth bit of
// element 64g+l in bit 2g of qh[l] and of element 64g+32+l in bit 2g+1.
func quantQ5_K(b []byte, x []float32) {
	var L [qkK]uint8
	quantScaleMinK(b[:16], x, &L, 31, -0.5, 15)
	qh, qs := b[16:48], b[48:176]
	clear(qh)
	for g := range 4 {
		for l := range 32 {
			lo, hi := L[64*g+l], L[64*g+l+32]
			qs[32*g+l] = lo&0x0f | (hi&0x0f)<<4
			qh[l] |= (lo>>4)<<(2*g) | (hi>>4)<<(2*g+1)
		}
	}
}

// quantScaleMinK fills the 16-byte header of a Q4_K or Q5_K super-block
// (f16 d and dmin, 12 bytes of packed 6-bit scales and mins) for x and
// returns the levels 0..nmax of its elements in L: per sub-block of 32 a
// scale and min search (fitScaleMin with rmin, 0.1 and nstep), the
// scales and mins quantized to 6 bits against d and dmin, then every
// element rounded against its quantized scale and min.
func quantScaleMinK(hdr []byte, x []float32, L *[qkK]uint8, nmax int, rmin float32, nstep int) {
	var (
		scales, mins   [8]float32
		weights        [32]float32
		maxScale, maxM float32
	)
	for j := range 8 {
		xs := x[32*j : 32*j+32]
		var sumX2 float32
		for _, v := range xs {
			sumX2 += v * v
		}
		avX := float32(math.Sqrt(float64(sumX2 / 32)))
		for l, v := range xs {
			weights[l] = avX + abs32(v)
		}
		scales[j], mins[j] = fitScaleMin(xs, weights[:], L[32*j:32*j+32], nmax, rmin, 0.1, nstep)
		maxScale = max(maxScale, scales[j])
		maxM = max(maxM, mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxM > 0 {
		invMin = 63 / maxM
	}
	sc := hdr[4:16]
	clear(sc)
	for j := range 8 {
		ls := uint8(min(63, max(0, nearest(invScale*scales[j]))))
		lm := uint8(min(63, max(0, nearest(invMin*mins[j]))))
		if j < 4 {
			sc[j], sc[j+4] = ls, lm
		} else {
			sc[j+4] = ls&0x0f | (lm&0x0f)<<4
			sc[j-4] |= (ls >> 4) << 6
			sc[j] |= (lm >> 4) << 6
		}
	}
	putF16(hdr[0:], maxScale/63)
	putF16(hdr[2:], maxM/63)
	d, dmin := f16(hdr[0:]), f16(hdr[2:])
	for j := range 8 {
		s, m := scaleMinK4(j, sc)
		dj := d * float32(s)
		if dj == 0 {
			continue // keep the levels of the search
		}
		dm := dmin * float32(m)
		for i := range 32 {
			L[32*j+i] = uint8(min(nmax, max(0, nearest((x[32*j+i]+dm)/dj))))
		}
	}
}

// fitScaleMin finds scale s and min m so that x ~ s*L - m with levels L in
// 0..nmax, minimising the weighted squared error (ggml's make_qkx2_quants):
// a first guess spans [min(x,0), max(x)], then nstep+1 trial inverse scales
// (rmin + rdelta*is + nmax)/range are each refined by weighted least
// squares, keeping the best. It returns s and m (m >= 0) and fills L.
func fitScaleMin(x, w []float32, L []uint8, nmax int, rmin, rdelta float32, nstep int) (scale, theMin float32) {
	n := len(x)
	lo, hi := x[0], x[0]
	sumW := w[0]
	sumX := sumW * x[0]
	for i := 1; i < n; i++ {
		lo, hi = min(lo, x[i]), max(hi, x[i])
		sumW += w[i]
		sumX += float32(w[i] * x[i])
	}
	lo = min(lo, 0)
	if hi == lo {
		clear(L)
		return 0, -lo
	}
	fn := float32(nmax)
	iscale := fn / (hi - lo)
	scale = 1 / iscale
	var bestErr float32
	for i := range n {
		L[i] = uint8(min(nmax, max(0, nearest(iscale*(x[i]-lo)))))
		diff := float32(scale*float32(L[i])) + lo - x[i]
		bestErr += float32(w[i] * float32(diff*diff))
	}
	var aux [32]uint8
	for is := 0; is <= nstep; is++ {
		iscale = (rmin + float32(rdelta*float32(is)) + fn) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i := range n {
			l := min(nmax, max(0, nearest(iscale*(x[i]-lo))))
			aux[i] = uint8(l)
			fl := float32(l)
			sumL += float32(w[i] * fl)
			sumL2 += float32(float32(w[i]*fl) * fl)
			sumXL += float32(float32(w[i]*fl) * x[i])
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D <= 0 {
			continue
		}
		thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
		thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		var cur float32
		for i := range n {
			diff := float32(thisScale*float32(aux[i])) + thisMin - x[i]
			cur += float32(w[i] * float32(diff*diff))
		}
		if cur < bestErr {
			copy(L, aux[:n])
			bestErr, scale, lo = cur, thisScale, thisMin
		}
	}
	return scale, -lo
}

// quantQ6_K encodes one super-block of 256 elements.
func quantQ6_K(b []byte, x []float32) {
	var (
		L                  [qkK]uint8
		scales             [16]float32
		maxScale, maxAbsSc float32
	)
	for ib := range 16 {
		s := fitSymmetric(x[16*ib:16*ib+16], L[16*ib:16*ib+16], 32)
		scales[ib] = s
		if abs32(s) > maxAbsSc {
			maxAbsSc, maxScale = abs32(s), s
		}
	}
	clear(b)
	if maxAbsSc < groupMaxEps {
		return // all zero: d = 0
	}
	iscale := -128 / maxScale
	putF16(b[208:], 1/iscale)
	sc := b[192:208]
	for ib := range 16 {
		sc[ib] = uint8(int8(min(127, nearest(iscale*scales[ib]))))
	}
	d := f16(b[208:])
	for j := range 16 {
		dj := d * float32(int8(sc[j]))
		if dj == 0 {
			continue
		}
		for i := range 16 {
			l := min(31, max(-32, nearest(x[16*j+i]/dj)))
			L[16*j+i] = uint8(l + 32)
		}
	}
	ql, qh := b[0:128], b[128:192]
	for h := range 2 {
		Lh := L[128*h:]
		for l := range 32 {
			ql[64*h+l] = Lh[l]&0x0f | (Lh[l+64]&0x0f)<<4
			ql[64*h+l+32] = Lh[l+32]&0x0f | (Lh[l+96]&0x0f)<<4
			qh[32*h+l] = Lh[l]>>4 | (Lh[l+32]>>4)<<2 | (Lh[l+64]>>4)<<4 | (Lh[l+96]>>4)<<6
		}
	}
}

// groupMaxEps is ggml's threshold below which a group counts as all zero.
const groupMaxEps = 1e-15

// fitSymmetric finds a scale s so that x ~ s*(L-nmax) with L in 0..2*nmax-1,
// minimising the error weighted by x^2 (ggml's make_qx_quants with
// rmse_type 1): the element of largest magnitude first maps to -nmax, then
// 18 nearby inverse scales are tried, each with its least-squares scale.
func fitSymmetric(x []float32, L []uint8, nmax int) float32 {
	var amax, m float32
	for _, v := range x {
		if abs32(v) > amax {
			amax, m = abs32(v), v
		}
	}
	if amax < groupMaxEps {
		clear(L)
		return 0
	}
	fn := float32(nmax)
	level := func(iscale, v float32) int { return min(nmax-1, max(-nmax, nearest(iscale*v))) }
	sums := func(iscale float32) (sumLX, sumL2 float32) {
		for _, v := range x {
			l := float32(level(iscale, v))
			w := v * v
			sumLX += float32(float32(w*v) * l)
			sumL2 += float32(float32(w*l) * l)
		}
		return sumLX, sumL2
	}
	iscale := -fn / m
	for i, v := range x {
		L[i] = uint8(level(iscale, v) + nmax)
	}
	sumLX, sumL2 := sums(iscale)
	var scale float32
	if sumL2 != 0 {
		scale = sumLX / sumL2
	}
	best := scale * sumLX
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fn + float32(0.1*float32(is))) / m
		sumLX, sumL2 = sums(iscale)
		if sumL2 > 0 && float32(sumLX*sumLX) > float32(best*sumL2) {
			for i, v := range x {
				L[i] = uint8(level(iscale, v) + nmax)
			}
			scale = sumLX / sumL2
			best = scale * sumLX
		}
	}
	return scale
}

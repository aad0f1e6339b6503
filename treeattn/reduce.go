package treeattn

import (
	"fmt"
	"math"
)

// MaxReduceFanIn is the most partial results one reduce_partials workgroup
// merges (its FANIN). Drivers stop long shader loops: lavapipe ends every
// loop of an invocation once all of its loops together have run 65535
// iterations, and other drivers have watchdogs. A reduce invocation loops
// about (1 + HeadDim/64) times per partial it merges, so 1024 partials at
// head dim 512 stay near 9300 iterations. Queries with more partials (a
// chain of tens of thousands of one-token nodes under DeFT-Node) are merged
// in levels: chunks of at most MaxReduceFanIn partials become intermediate
// partials, until every query has at most MaxReduceFanIn.
const MaxReduceFanIn = 1024

// reducePass is one dispatch of reduce_partials: groups lists (a CSR in the
// device metadata) merged into the output, or into the intermediate
// partials outBase, outBase+1, ...
type reducePass struct {
	groups     int
	offsetsOff uint32
	listOff    uint32
	toPartials bool
	outBase    uint32
}

// reduceSchedule plans the reduction of p's partials with at most fanIn per
// group, reusing the array of buf. It returns the passes in order (the last
// writes the output), the
// metadata words they need beyond p's own (placed from word len(p.meta))
// and the number of partials including the intermediate ones. When no query
// has more than fanIn partials, it is the one pass over the plan's own
// inverse index, with no extra metadata.
func (p *Plan) reduceSchedule(fanIn int, buf []reducePass) (passes []reducePass, extra []uint32, partials int) {
	offsets := p.meta[p.offsetsOff : p.offsetsOff+uint32(p.NumQueries)+1]
	deep := false
	for q := range p.NumQueries {
		deep = deep || int(offsets[q+1]-offsets[q]) > fanIn
	}
	final := reducePass{groups: p.NumQueries, offsetsOff: p.offsetsOff, listOff: p.listOff}
	partials = p.Partials
	if !deep {
		return append(buf[:0], final), nil, partials // no allocation step after step
	}
	lists := make([][]uint32, p.NumQueries)
	for q := range lists {
		lists[q] = p.meta[p.listOff+offsets[q] : p.listOff+offsets[q+1]]
	}
	base := uint32(len(p.meta))
	// csr appends the lists of one pass to extra and returns where they went.
	csr := func(groups [][]uint32) (offsetsOff, listOff uint32) {
		offsetsOff = base + uint32(len(extra))
		n := uint32(0)
		for _, g := range groups {
			extra = append(extra, n)
			n += uint32(len(g))
		}
		extra = append(extra, n)
		listOff = base + uint32(len(extra))
		for _, g := range groups {
			extra = append(extra, g...)
		}
		return offsetsOff, listOff
	}
	for deep {
		level := reducePass{toPartials: true, outBase: uint32(partials)}
		var groups [][]uint32
		deep = false
		for q, l := range lists {
			if len(l) <= fanIn {
				continue
			}
			// Near-equal chunks, in order, each becoming one intermediate.
			k := ceilDiv(len(l), fanIn)
			merged := make([]uint32, k)
			for i := range k {
				groups = append(groups, l[i*len(l)/k:(i+1)*len(l)/k])
				merged[i] = uint32(partials)
				partials++
			}
			lists[q] = merged
			deep = deep || k > fanIn
		}
		level.groups = len(groups)
		level.offsetsOff, level.listOff = csr(groups)
		passes = append(passes, level)
	}
	final.offsetsOff, final.listOff = csr(lists)
	return append(passes, final), extra, partials
}

// scoreExpLimit: scores up to 2^scoreExpLimit in magnitude are computed as
// they are; larger ones in units of a power of two. The margin keeps sums
// of scores and their differences far from fp32's 2^128.
const scoreExpLimit = 100

// ScoreBound returns an upper bound on the magnitude of every score
// scale·q·k of q against k (and of scale·q, which the kernel forms first),
// computed in float64 from the largest query and key norms
// (Cauchy-Schwarz): the value DevicePlan.SetScoreBound takes. q is
// [query][qhead][dim] and k [slot][kvhead][dim] as Reference takes them.
func ScoreBound(s Shape, q, k []float32, scale float64) float64 {
	maxNorm := func(x []float32) float64 {
		m := 0.0
		for r := 0; r+s.HeadDim <= len(x); r += s.HeadDim {
			sum := 0.0
			for _, v := range x[r : r+s.HeadDim] {
				sum += float64(v) * float64(v)
			}
			m = max(m, sum)
		}
		return math.Sqrt(m)
	}
	qn := maxNorm(q)
	return scale * qn * max(maxNorm(k), 1)
}

// scoreUnit returns the power of two the kernels count scores in for
// scores up to bound, and the push constant scale/unit.
func scoreUnit(bound, scale float64) (unit float64, scaled float32, err error) {
	if math.IsNaN(bound) || bound < 0 {
		return 0, 0, fmt.Errorf("score bound %v must be non-negative", bound)
	}
	e := 0
	if bound > math.Ldexp(1, scoreExpLimit) {
		if math.IsInf(bound, 1) {
			return 0, 0, fmt.Errorf("scores are unbounded: inputs must be finite")
		}
		frac, exp := math.Frexp(bound) // bound = frac·2^exp, frac in [0.5, 1)
		if frac == 0.5 {
			exp-- // bound is 2^(exp-1)
		}
		e = exp - scoreExpLimit // bound ≤ 2^exp
	}
	// Above 2^200 the scaled queries of ordinary rows would fall below
	// fp32's normal range; no such input is meaningful.
	if e > scoreExpLimit {
		return 0, 0, fmt.Errorf("scores up to %.3g exceed what fp32 attention computes (at most 2^%d)", bound, 2*scoreExpLimit)
	}
	unit = math.Ldexp(1, e)
	scaled = float32(scale / unit)
	if scaled < math.SmallestNonzeroFloat32*(1<<23) { // not a normal float32
		return 0, 0, fmt.Errorf("scale %g in units of 2^%d (scores up to %.3g) underflows fp32", scale, e, bound)
	}
	return unit, scaled, nil
}

package kvpool

import (
	"fmt"
	"slices"
)

// checkInvariants recomputes the pool's bookkeeping from its live nodes and
// compares: page reference counts, allocation marks, ownership, the free
// list, token and node counts, and that no slot is held twice.
func (p *Pool) checkInvariants() error {
	pt := int32(p.pageTokens)
	refs := make([]int32, p.numPages)
	owned := make([]*Node, p.numPages)
	holder := map[int32]*Node{}
	nodes, tokens := 0, 0
	stack := []*Node{p.root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = append(stack[:len(stack)-1], n.children...)
		if !n.live {
			return fmt.Errorf("%v: pruned node still linked", n)
		}
		if n != p.root {
			nodes++
			if want := n.parent.base + len(n.parent.slots); n.base != want {
				return fmt.Errorf("%v: base %d, parent holds %d tokens up to it", n, n.base, want)
			}
		} else if len(n.slots) > 0 || n.tail >= 0 || n.region != nil {
			return fmt.Errorf("root holds tokens or pages")
		}
		for _, c := range n.children {
			if c.parent != n {
				return fmt.Errorf("%v: child %v has parent %v", n, c, c.parent)
			}
		}
		tokens += len(n.slots)
		var pages []int32
		for _, s := range n.slots {
			if s < 0 || int(s) >= p.NumSlots() {
				return fmt.Errorf("%v: slot %d outside the pool", n, s)
			}
			if h := holder[s]; h != nil {
				return fmt.Errorf("slot %d held by %v and %v", s, h, n)
			}
			holder[s] = n
			pg := s / pt
			refs[pg]++
			if len(pages) == 0 || pages[len(pages)-1] != pg {
				pages = append(pages, pg)
			}
			if s%pt >= p.pages[pg].used {
				return fmt.Errorf("%v: slot %d at or above page %d's allocation mark %d", n, s, pg, p.pages[pg].used)
			}
		}
		if !slices.Equal(pages, n.pages) {
			return fmt.Errorf("%v: pages %v, slots are in %v", n, n.pages, pages)
		}
		own := func(pg int32) error {
			if owned[pg] != nil && owned[pg] != n {
				return fmt.Errorf("page %d owned by %v and %v", pg, owned[pg], n)
			}
			if p.pages[pg].owner != n {
				return fmt.Errorf("%v: page %d should be owned by it, owner is %v", n, pg, p.pages[pg].owner)
			}
			if owned[pg] == nil {
				refs[pg]++
			}
			owned[pg] = n
			return nil
		}
		if n.tail >= 0 {
			if len(n.slots) == 0 || n.slots[len(n.slots)-1]/pt != n.tail {
				return fmt.Errorf("%v: tail page %d does not hold its last token", n, n.tail)
			}
			if err := own(n.tail); err != nil {
				return err
			}
		}
		if r := n.region; r != nil {
			if len(n.children) == 0 {
				return fmt.Errorf("%v: token tree without draft nodes", n)
			}
			for _, pg := range r.pages {
				if err := own(pg); err != nil {
					return err
				}
			}
		}
		if n.seq != nil {
			if !n.seq.live || n.seq.region == nil || len(n.slots) != 1 || n.slots[0] != p.regionSlot(n.seq.region, n.pos) {
				return fmt.Errorf("%v: draft node out of its token tree", n)
			}
		}
	}
	if nodes != p.nodes || tokens != p.tokens {
		return fmt.Errorf("counted %d nodes and %d tokens, pool says %d and %d", nodes, tokens, p.nodes, p.tokens)
	}
	isFree := make([]bool, p.numPages)
	for _, pg := range p.free {
		if isFree[pg] {
			return fmt.Errorf("page %d on the free list twice", pg)
		}
		isFree[pg] = true
	}
	for pg := range p.pages {
		pp := p.pages[pg]
		if pp.refs != refs[pg] {
			return fmt.Errorf("page %d: refs %d, recomputed %d", pg, pp.refs, refs[pg])
		}
		if isFree[pg] != (pp.refs == 0) {
			return fmt.Errorf("page %d: refs %d but free=%v", pg, pp.refs, isFree[pg])
		}
		if pp.refs == 0 && (pp.used != 0 || pp.owner != nil) {
			return fmt.Errorf("free page %d has used %d, owner %v", pg, pp.used, pp.owner)
		}
		if pp.owner != nil && owned[pg] != pp.owner {
			return fmt.Errorf("page %d: owner %v does not hold it", pg, pp.owner)
		}
	}
	return nil
}

// snapshot is a deep copy of the pool's observable bookkeeping.
type snapshot struct {
	Pages  []string
	Free   []int32
	Nodes  map[int]string
	Counts [3]int
}

func (p *Pool) snapshot() snapshot {
	s := snapshot{Free: slices.Clone(p.free), Nodes: map[int]string{}, Counts: [3]int{p.nodes, p.tokens, int(p.moved)}}
	for _, pg := range p.pages {
		owner := -1
		if pg.owner != nil {
			owner = pg.owner.id
		}
		s.Pages = append(s.Pages, fmt.Sprint(pg.refs, pg.used, owner))
	}
	stack := []*Node{p.root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = append(stack[:len(stack)-1], n.children...)
		var kids []int
		for _, c := range n.children {
			kids = append(kids, c.id)
		}
		reg := "-"
		if n.region != nil {
			reg = fmt.Sprint(*n.region)
		}
		s.Nodes[n.id] = fmt.Sprint(n.slots, n.pages, n.base, n.tail, kids, reg, n.pos, n.live)
	}
	return s
}

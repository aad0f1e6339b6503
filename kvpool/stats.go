package kvpool

// Stats describes a pool's memory. A sequence is a live leaf node (drafted
// tokens included: each is a candidate sequence).
type Stats struct {
	Pages      int // capacity
	PagesInUse int
	PagesFree  int
	// PagesShared counts pages holding tokens that more than one sequence
	// reads (tokens of a node with several leaves below it).
	PagesShared int

	Nodes     int // live nodes
	Sequences int // live leaves
	Tokens    int // tokens held, each once
	// LogicalTokens is the sum over sequences of the tokens each attends
	// to: what a cache without sharing would hold.
	LogicalTokens int

	PageBytes  uint64 // K and V of one page over all layers
	BytesInUse uint64 // PagesInUse * PageBytes
	// BytesUnshared is what a paged cache without sharing would use: every
	// sequence in its own pages, ceil(length / PageTokens) of them.
	BytesUnshared uint64
	// BytesSaved is BytesUnshared - BytesInUse (negative when unused page
	// tails cost more than sharing saves).
	BytesSaved int64

	// MovedTokens counts the tokens Accept has copied on the GPU so far.
	MovedTokens int64
}

// Stats computes the pool's statistics. It walks the live nodes and the
// pages of shared nodes, so it costs more than a decoding step's
// bookkeeping; NumPages and FreePages alone are free.
func (p *Pool) Stats() Stats {
	s := Stats{
		Pages: p.numPages, PagesFree: len(p.free), PagesInUse: p.numPages - len(p.free),
		Nodes: p.nodes, Tokens: p.tokens, PageBytes: p.cfg.PageBytes(), MovedTokens: p.moved,
	}
	s.BytesInUse = uint64(s.PagesInUse) * s.PageBytes
	// Pre-order walk, then leaf counts bottom-up (children follow parents).
	order := []*Node{}
	stack := []*Node{p.root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = append(stack[:len(stack)-1], n.children...)
		order = append(order, n)
	}
	for _, n := range order {
		n.scr = 0
	}
	unshared := 0
	for i := len(order) - 1; i > 0; i-- { // order[0] is the root
		n := order[i]
		if len(n.children) == 0 {
			n.scr = 1
			s.LogicalTokens += n.Len()
			unshared += (n.Len() + p.pageTokens - 1) / p.pageTokens
		}
		n.parent.scr += n.scr
	}
	s.Sequences = p.root.scr
	shared := map[int32]bool{}
	for _, n := range order[1:] {
		if n.scr >= 2 {
			for _, pg := range n.pages {
				shared[pg] = true
			}
		}
	}
	s.PagesShared = len(shared)
	s.BytesUnshared = uint64(unshared) * s.PageBytes
	s.BytesSaved = int64(s.BytesUnshared) - int64(s.BytesInUse)
	return s
}

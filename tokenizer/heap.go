package tokenizer

// queue is a binary max-heap ordered by before (before(a, b): a pops
// first). It is hand-rolled rather than container/heap to keep bigrams
// unboxed in the merge loops, which run once per input character.
type queue[T any] struct {
	items  []T
	before func(a, b T) bool
}

func (q *queue[T]) len() int { return len(q.items) }

func (q *queue[T]) push(x T) {
	q.items = append(q.items, x)
	i := len(q.items) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.before(q.items[i], q.items[p]) {
			break
		}
		q.items[i], q.items[p] = q.items[p], q.items[i]
		i = p
	}
}

func (q *queue[T]) pop() T {
	top := q.items[0]
	last := len(q.items) - 1
	q.items[0] = q.items[last]
	q.items = q.items[:last]
	i := 0
	for {
		l, r, best := 2*i+1, 2*i+2, i
		if l < last && q.before(q.items[l], q.items[best]) {
			best = l
		}
		if r < last && q.before(q.items[r], q.items[best]) {
			best = r
		}
		if best == i {
			return top
		}
		q.items[i], q.items[best] = q.items[best], q.items[i]
		i = best
	}
}

// mergePairs is the merge loop both tokenizers share: offer every adjacent
// pair of symbols, then join the best pair the queue holds, again and
// again, and offer the joined symbol's new neighbours. tryAdd pushes a pair
// when the vocabulary can merge it; pair reads a queued pair back. A pair
// is stale once either side has merged with something else: symbols only
// grow, so its recorded size no longer matches.
func mergePairs[T any](syms []symbol, q *queue[T], pair func(T) (left, right, size int), tryAdd func(left, right int)) {
	for i := 1; i < len(syms); i++ {
		tryAdd(i-1, i)
	}
	for q.len() > 0 {
		left, right, size := pair(q.pop())
		l, r := &syms[left], &syms[right]
		if l.n == 0 || r.n == 0 || l.n+r.n != size {
			continue
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = left
		}
		tryAdd(l.prev, left)
		tryAdd(left, l.next)
	}
}

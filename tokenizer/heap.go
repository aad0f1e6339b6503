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

package replay

import (
	"fmt"
	"time"

	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/vk"
)

// PoolDriver applies a workload's steps to a KV pool: logical node ids map
// to pool nodes, each step's Ops allocate slots, Tree yields the step's
// treeattn tree over the pool, and After prunes and accepts. A batch of
// one-token forks under a sequence that has no children (a speculative
// token tree) becomes one kvpool Draft, so the tree takes consecutive slots
// and accepting the best-first path moves nothing.
type PoolDriver struct {
	Pool *kvpool.Pool
	// Rec records the GPU copies an Accept may need; nil for host pools.
	Rec   *vk.Recorder
	nodes map[int]*kvpool.Node
	// Slots are the slots allocated by the last Begin, in op order (the
	// rows the step's layers write).
	Slots []int32
	// TreeTime is the host time the last Begin spent producing the tree.
	TreeTime time.Duration
}

// NewPoolDriver starts a driver on pool p.
func NewPoolDriver(p *kvpool.Pool) *PoolDriver {
	return &PoolDriver{Pool: p, nodes: map[int]*kvpool.Node{}}
}

func (d *PoolDriver) node(id int) (*kvpool.Node, error) {
	n := d.nodes[id]
	if n == nil {
		return nil, fmt.Errorf("node %d is not live", id)
	}
	return n, nil
}

// draftBatch recognises ops[i:] as fork+append(1) pairs forming a token tree
// under one childless node; it returns the tree's parent indices, the ids
// of the new nodes and how many ops it covers (0 when it is no such batch).
func (d *PoolDriver) draftBatch(ops []Op) (base *kvpool.Node, parents []int, ids []int, used int) {
	index := map[int]int{}
	baseID := 0
	for used+1 < len(ops) {
		f, a := ops[used], ops[used+1]
		if f.Kind != OpFork || a.Kind != OpAppend || a.Node != f.Node || a.Tokens != 1 {
			break
		}
		parent := -1
		if j, ok := index[f.Parent]; ok {
			parent = j
		} else if len(ids) == 0 {
			baseID = f.Parent
		} else if f.Parent != baseID {
			break
		}
		index[f.Node] = len(ids)
		parents = append(parents, parent)
		ids = append(ids, f.Node)
		used += 2
	}
	if len(ids) < 2 {
		return nil, nil, nil, 0
	}
	base = d.nodes[baseID]
	if base == nil || len(base.Children()) > 0 || base.IsDraft() {
		return nil, nil, nil, 0
	}
	parents, ids = depthFirst(parents, ids)
	return base, parents, ids, used
}

// depthFirst reorders a token tree (parents[i] < i, -1 for roots) into
// depth-first order, children in their given order, so that the chain of
// first children (the best-first path of a Medusa tree) has consecutive
// slots and its Accept moves nothing.
func depthFirst(parents, ids []int) ([]int, []int) {
	children := make([][]int, len(parents)+1) // last entry: the roots
	for i, p := range parents {
		if p < 0 {
			p = len(parents)
		}
		children[p] = append(children[p], i)
	}
	order := make([]int, 0, len(parents))
	stack := []int{len(parents)}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n < len(parents) {
			order = append(order, n)
		}
		for c := len(children[n]) - 1; c >= 0; c-- {
			stack = append(stack, children[n][c])
		}
	}
	pos := make([]int, len(parents))
	for k, i := range order {
		pos[i] = k
	}
	outParents := make([]int, len(parents))
	outIDs := make([]int, len(ids))
	for k, i := range order {
		outIDs[k] = ids[i]
		outParents[k] = -1
		if parents[i] >= 0 {
			outParents[k] = pos[parents[i]]
		}
	}
	return outParents, outIDs
}

// Begin applies st.Ops and returns the tree over the pool for st.Queries.
func (d *PoolDriver) Begin(st Step) (*kvpool.Step, error) {
	d.Slots = d.Slots[:0]
	for i := 0; i < len(st.Ops); {
		if base, parents, ids, used := d.draftBatch(st.Ops[i:]); used > 0 {
			drafts, slots, err := d.Pool.Draft(base, parents)
			if err != nil {
				return nil, fmt.Errorf("step %d: draft %d tokens: %w", st.Index, len(parents), err)
			}
			for k, id := range ids {
				d.nodes[id] = drafts[k]
			}
			d.Slots = append(d.Slots, slots...)
			i += used
			continue
		}
		op := st.Ops[i]
		i++
		switch op.Kind {
		case OpFork:
			var n *kvpool.Node
			if op.Parent == NoParent {
				n = d.Pool.NewSequence()
			} else {
				parent, err := d.node(op.Parent)
				if err != nil {
					return nil, fmt.Errorf("step %d: %v: %w", st.Index, op, err)
				}
				if n, err = d.Pool.Fork(parent); err != nil {
					return nil, fmt.Errorf("step %d: %v: %w", st.Index, op, err)
				}
			}
			d.nodes[op.Node] = n
		case OpAppend:
			n, err := d.node(op.Node)
			if err != nil {
				return nil, fmt.Errorf("step %d: %v: %w", st.Index, op, err)
			}
			slots, err := d.Pool.Append(n, op.Tokens)
			if err != nil {
				return nil, fmt.Errorf("step %d: %v: %w", st.Index, op, err)
			}
			d.Slots = append(d.Slots, slots...)
		default:
			return nil, fmt.Errorf("step %d: %v before the attention", st.Index, op)
		}
	}
	start := time.Now()
	qs := make([]kvpool.Query, len(st.Queries))
	for i, q := range st.Queries {
		n, err := d.node(q.Node)
		if err != nil {
			return nil, fmt.Errorf("step %d: query %d: %w", st.Index, i, err)
		}
		qs[i] = kvpool.Query{Node: n, Offset: q.Offset}
	}
	tree, err := d.Pool.Tree(qs)
	d.TreeTime = time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("step %d: tree: %w", st.Index, err)
	}
	return tree, nil
}

// End applies st.After: prunes and accepts.
func (d *PoolDriver) End(st Step) error {
	for _, op := range st.After {
		n, err := d.node(op.Node)
		if err != nil {
			return fmt.Errorf("step %d: %v: %w", st.Index, op, err)
		}
		switch op.Kind {
		case OpPrune:
			if err := d.Pool.Prune(n); err != nil {
				return fmt.Errorf("step %d: %v: %w", st.Index, op, err)
			}
		case OpAccept:
			path := make([]*kvpool.Node, len(op.Path))
			for i, id := range op.Path {
				if path[i], err = d.node(id); err != nil {
					return fmt.Errorf("step %d: %v: %w", st.Index, op, err)
				}
			}
			if _, err := d.Pool.Accept(d.Rec, n, path); err != nil {
				return fmt.Errorf("step %d: %v: %w", st.Index, op, err)
			}
		default:
			return fmt.Errorf("step %d: %v after the attention", st.Index, op)
		}
	}
	for id, n := range d.nodes { // pruned subtrees and accepted paths are gone
		if !n.Live() {
			delete(d.nodes, id)
		}
	}
	return nil
}

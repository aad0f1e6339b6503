// Package replay turns tree-decoding workloads into per-step operations.
//
// A Workload is a sequence of Steps. Each Step lists the operations that
// grow the decoding tree before the step's attention (Fork and Append), the
// token positions whose attention output the step computes (Queries), and
// the operations that follow from the step's outputs (Prune and Accept).
// Nodes are named by the workload's own logical ids; a KV pool maps them to
// its own handles. The drivers are:
//
//   - FewShot: a shared prompt and b branches decoding in parallel;
//   - Reasoning: a recorded Tree-of-Thoughts trace (DeFT's reasoning files),
//     branching and pruning as recorded;
//   - Speculative: a committed sequence verified each step with a
//     Medusa-style token tree (DeFT's APPS files), accepting the recorded
//     number of tokens.
//
// Simulator is a reference model of the logical state (node -> parent,
// token count, live flag) that checks the operations, measures the tokens
// held with and without prefix sharing, and builds the treeattn.Tree of a
// step without any KV pool.
package replay

import (
	"fmt"
	"iter"
	"slices"
	"strconv"
)

// NoParent is the Parent of a Fork that starts a new root sequence.
const NoParent = -1

// OpKind is the kind of an Op.
type OpKind uint8

// Operation kinds.
const (
	// OpFork creates node Node as a child of node Parent: the child shares
	// all of its parent's tokens and has none of its own yet. With Parent
	// == NoParent it creates a new root sequence without tokens.
	OpFork OpKind = iota + 1
	// OpAppend appends Tokens new tokens to node Node, which has no live
	// children. The KV pool allocates their slots and the step's layers
	// write their K/V.
	OpAppend
	// OpPrune releases node Node, which has no live children. Workloads
	// release a parent explicitly (another OpPrune) once its last child is
	// gone; nothing is released implicitly.
	OpPrune
	// OpAccept commits a speculative path: Path lists live nodes, Path[0] a
	// child of Node and each Path[j] a child of Path[j-1]. Their tokens,
	// Tokens in all, become committed tokens at the end of Node, in path
	// order, and every node below Node (the whole token tree, accepted
	// nodes included) is released. Node has no children afterwards.
	OpAccept
)

var opKindNames = [...]string{OpFork: "fork", OpAppend: "append", OpPrune: "prune", OpAccept: "accept"}

// String returns "fork", "append", "prune" or "accept".
func (k OpKind) String() string {
	if int(k) < len(opKindNames) && opKindNames[k] != "" {
		return opKindNames[k]
	}
	return "OpKind(" + strconv.Itoa(int(k)) + ")"
}

// Op is one operation on the decoding tree. Fields that a kind does not use
// are zero.
type Op struct {
	Kind OpKind
	// Node is the logical id of the node operated on (the new node for
	// OpFork, the sequence for OpAccept).
	Node int
	// Parent is the parent of a new node (OpFork only), or NoParent.
	Parent int
	// Tokens is the number of tokens appended (OpAppend) or committed
	// (OpAccept, the total over Path).
	Tokens int
	// Path is the accepted chain of nodes, top down (OpAccept only).
	Path []int
}

// String formats the op for logs and error messages.
func (o Op) String() string {
	switch o.Kind {
	case OpFork:
		return fmt.Sprintf("fork %d from %d", o.Node, o.Parent)
	case OpAppend:
		return fmt.Sprintf("append %d tokens to %d", o.Tokens, o.Node)
	case OpPrune:
		return fmt.Sprintf("prune %d", o.Node)
	case OpAccept:
		return fmt.Sprintf("accept %d tokens of path %v into %d", o.Tokens, o.Path, o.Node)
	}
	return fmt.Sprintf("%v node %d", o.Kind, o.Node)
}

// Query is a token position whose attention output a step computes: token
// Offset (0-based) of logical node Node. It attends to every token of the
// node's ancestors and to tokens 0..Offset of the node.
type Query struct {
	Node, Offset int
}

// Step is one decoding step. A consumer applies Ops in order, computes
// attention for Queries (each sees its node's ancestors and its own node up
// to Offset), then applies After in order.
type Step struct {
	// Index counts the workload's steps from 0.
	Index int
	// Prefill marks a step that appends a whole prompt to one node rather
	// than decoding (step 0 of every driver here); benchmarks of decode
	// attention may skip it. Its only query is the prompt's last token,
	// whose output gives the first generated token.
	Prefill bool
	// Ops are OpFork and OpAppend operations applied before the attention.
	Ops []Op
	// Queries are the positions whose attention output the step computes,
	// each at most once. Every step has at least one query.
	Queries []Query
	// After are OpPrune and OpAccept operations applied after the
	// attention: branches that ended, speculative tokens accepted. The last
	// step's After releases everything the workload still holds.
	After []Op
}

// Clone returns a deep copy of s.
func (s Step) Clone() Step {
	c := s
	c.Ops = cloneOps(s.Ops)
	c.Queries = slices.Clone(s.Queries)
	c.After = cloneOps(s.After)
	return c
}

// orNil returns s, or nil when s is empty, so that steps compare equal
// however their buffers were reused.
func orNil[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

func cloneOps(ops []Op) []Op {
	if ops == nil {
		return nil
	}
	c := make([]Op, len(ops))
	for i, o := range ops {
		c[i] = o
		c[i].Path = slices.Clone(o.Path)
	}
	return c
}

// Workload produces the steps of one decoding run.
type Workload interface {
	// Name describes the workload, e.g. "fewshot-P4000-b50-L400".
	Name() string
	// Next returns the next step and true, or a zero Step and false after
	// the last one. The returned slices are only valid until the following
	// call to Next (drivers reuse them); use Step.Clone to keep a step.
	Next() (Step, bool)
}

// Steps returns an iterator over the remaining steps of w. As with Next,
// each step's slices are only valid during its iteration.
func Steps(w Workload) iter.Seq[Step] {
	return func(yield func(Step) bool) {
		for {
			st, ok := w.Next()
			if !ok || !yield(st) {
				return
			}
		}
	}
}

// All returns copies of all remaining steps of w.
func All(w Workload) []Step {
	var out []Step
	for st := range Steps(w) {
		out = append(out, st.Clone())
	}
	return out
}

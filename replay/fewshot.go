package replay

import (
	"fmt"

	"github.com/deft-vk/deft/treeattn"
)

// Paper defaults for few-shot prompting (DeFT's evaluation): a 4000-token
// prompt, 20, 30 or 50 branches, 400 decoding steps.
const (
	FewShotPrompt = 4000
	FewShotSteps  = 400
)

// FewShot is the few-shot prompting / parallel sampling workload: one
// prompt shared by several branches that decode in lockstep.
//
// Node 0 is the prompt and nodes 1..b the branches. Step 0 (Prefill) forks
// the root, appends the prompt and queries its last token. Step 1 forks the
// b branches from the root; steps 1..L append one token to every branch
// and query each branch's last token, in branch order. The last step's
// After prunes the branches and then the root.
//
// After step s >= 1 the tree is treeattn.FewShotTree(P, b, s).
type FewShot struct {
	prompt, branches, steps int
	next                    int
	ops, after              []Op
	queries                 []Query
}

// NewFewShot returns the few-shot workload with a prompt of prompt tokens,
// branches branches and steps decoding steps (steps+1 steps in all, with
// the prefill). Every argument must be at least 1 and the final tree must
// fit treeattn's limits (MaxTreeNodes, MaxTreeQueries, MaxTreeTokens).
func NewFewShot(prompt, branches, steps int) (*FewShot, error) {
	if prompt < 1 || branches < 1 || steps < 1 {
		return nil, fmt.Errorf("few-shot workload: prompt %d, branches %d and steps %d must all be at least 1", prompt, branches, steps)
	}
	if branches >= treeattn.MaxTreeNodes || branches > treeattn.MaxTreeQueries ||
		prompt > treeattn.MaxTreeTokens || steps > (treeattn.MaxTreeTokens-prompt)/branches {
		return nil, fmt.Errorf("few-shot workload: prompt %d, branches %d, steps %d exceed the tree limits (%d nodes, %d queries, %d tokens)",
			prompt, branches, steps, treeattn.MaxTreeNodes, treeattn.MaxTreeQueries, treeattn.MaxTreeTokens)
	}
	return &FewShot{prompt: prompt, branches: branches, steps: steps}, nil
}

// Name returns "fewshot-P<prompt>-b<branches>-L<steps>".
func (f *FewShot) Name() string {
	return fmt.Sprintf("fewshot-P%d-b%d-L%d", f.prompt, f.branches, f.steps)
}

// Len returns the number of steps, steps+1.
func (f *FewShot) Len() int { return f.steps + 1 }

// Next implements Workload.
func (f *FewShot) Next() (Step, bool) {
	s := f.next
	if s > f.steps {
		return Step{}, false
	}
	f.next++
	f.ops, f.queries, f.after = f.ops[:0], f.queries[:0], f.after[:0]
	st := Step{Index: s}
	if s == 0 {
		st.Prefill = true
		f.ops = append(f.ops, Op{Kind: OpFork, Node: 0, Parent: NoParent}, Op{Kind: OpAppend, Node: 0, Tokens: f.prompt})
		f.queries = append(f.queries, Query{Node: 0, Offset: f.prompt - 1})
	} else {
		if s == 1 {
			for b := 1; b <= f.branches; b++ {
				f.ops = append(f.ops, Op{Kind: OpFork, Node: b, Parent: 0})
			}
		}
		for b := 1; b <= f.branches; b++ {
			f.ops = append(f.ops, Op{Kind: OpAppend, Node: b, Tokens: 1})
			f.queries = append(f.queries, Query{Node: b, Offset: s - 1})
		}
	}
	if s == f.steps {
		for b := 1; b <= f.branches; b++ {
			f.after = append(f.after, Op{Kind: OpPrune, Node: b})
		}
		f.after = append(f.after, Op{Kind: OpPrune, Node: 0})
	}
	st.Ops, st.Queries, st.After = orNil(f.ops), orNil(f.queries), orNil(f.after)
	return st, true
}

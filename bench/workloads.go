package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/deft-vk/deft/kvpool"
	"github.com/deft-vk/deft/replay"
	"github.com/deft-vk/deft/treeattn"
)

// Module is this repository's module path; FindWorkloads recognises the
// repository root by a go.mod declaring it.
const Module = "github.com/deft-vk/deft"

// Shared workload files, relative to the workloads folder (see
// ../shared/workloads/README.md).
const (
	SortingFile = "deft/reasoning/sorting128ToT.json"
	SetFile     = "deft/reasoning/set128ToT.json"
	specFile    = "deft/speculative/APPS_tree_size%d.json"
)

// Source locates the workload data files, the DeFT reasoning traces and
// speculative token trees of the shared workloads folder.
type Source struct {
	// Dir is the workloads folder (--workloads); "" searches for it with
	// FindWorkloads.
	Dir string
	// TraceTree picks the reasoning trace's tree: the index among the
	// complete trees (incompleted == false) of the file, 0 for the first.
	TraceTree int
}

// executable is os.Executable; tests replace it.
var executable = os.Executable

// WorkloadDirs returns the folders FindWorkloads tries, in order:
// ../shared/workloads next to the working directory, next to the
// repository root above the working directory, and next to the repository
// root above the running executable (e.g. .bin/deft of a checkout).
func WorkloadDirs() []string {
	var dirs []string
	add := func(d string) {
		if d == "" {
			return
		}
		d = filepath.Clean(d)
		for _, e := range dirs {
			if e == d {
				return
			}
		}
		dirs = append(dirs, d)
	}
	shared := func(root string) string {
		if root == "" {
			return ""
		}
		return filepath.Join(root, "..", "shared", "workloads")
	}
	if wd, err := os.Getwd(); err == nil {
		add(shared(wd))
		add(shared(RepoRoot(wd)))
	}
	if exe, err := executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		add(shared(RepoRoot(filepath.Dir(exe))))
	}
	return dirs
}

// RepoRoot returns the closest folder at or above dir whose go.mod declares
// Module, or "".
func RepoRoot(dir string) string {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[0] == "module" && strings.Trim(f[1], `"`) == Module {
					return dir
				}
			}
		}
		up := filepath.Dir(dir)
		if up == dir {
			return ""
		}
		dir = up
	}
}

// File returns the path of rel (e.g. SortingFile) in the workloads folder:
// in s.Dir when set, else in the first folder of WorkloadDirs that has it.
// The error names the folders tried and how to point at the data.
func (s Source) File(rel string) (string, error) {
	if s.Dir != "" {
		p := filepath.Join(s.Dir, filepath.FromSlash(rel))
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("workload data %s not found in --workloads %s: %w", rel, s.Dir, err)
		}
		return p, nil
	}
	dirs := WorkloadDirs()
	for _, d := range dirs {
		p := filepath.Join(d, filepath.FromSlash(rel))
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("workload data %s not found: looked in %s; pass --workloads DIR (the shared workloads folder, "+
		"holding deft/reasoning and deft/speculative) or set $DEFT_WORKLOADS", rel, strings.Join(dirs, ", "))
}

// ReasoningTree returns tree s.TraceTree among the complete trees of a
// DeFT reasoning file (SortingFile or SetFile).
func (s Source) ReasoningTree(rel string) (*replay.ReasoningTree, error) {
	p, err := s.File(rel)
	if err != nil {
		return nil, err
	}
	trees, err := replay.ReadReasoningFile(p)
	if err != nil {
		return nil, err
	}
	done := replay.Completed(trees)
	if s.TraceTree < 0 || s.TraceTree >= len(done) {
		return nil, fmt.Errorf("%s: complete tree %d asked for, the file has %d complete trees (of %d)", p, s.TraceTree, len(done), len(trees))
	}
	return done[s.TraceTree], nil
}

// SpecTree returns the DeFT speculative token tree of size tokens.
func (s Source) SpecTree(size int) (*replay.SpecTree, error) {
	p, err := s.File(fmt.Sprintf(specFile, size))
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	t, err := replay.ParseSpeculativeJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return t, nil
}

// FullTree returns a reasoning trace's tree with every node at full length
// (its Value tokens) and a query at the last token of every leaf: the tree
// of the trace's last iteration if nothing were pruned. Nodes are in
// depth-first order from the root, children in trace order, so each
// subtree's tokens are contiguous; leaves are queried in that order.
func FullTree(rt *replay.ReasoningTree) (*treeattn.Tree, error) {
	if rt == nil || len(rt.Nodes) == 0 {
		return nil, errors.New("full tree: empty reasoning tree")
	}
	if err := rt.Validate(); err != nil {
		return nil, err
	}
	pos := make(map[int]int, len(rt.Nodes))
	child := make(map[int]bool, len(rt.Nodes))
	for i, n := range rt.Nodes {
		pos[n.ID] = i
		for _, c := range n.Children {
			child[c] = true
		}
	}
	root := -1
	for i, n := range rt.Nodes {
		if !child[n.ID] {
			root = i
			break
		}
	}
	if root < 0 {
		return nil, errors.New("full tree: no root")
	}
	t := &treeattn.Tree{}
	type item struct{ pos, parent int }
	stack := []item{{root, -1}}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n := rt.Nodes[it.pos]
		idx := len(t.Nodes)
		t.Nodes = append(t.Nodes, treeattn.Node{Parent: it.parent, Tokens: n.Value})
		if len(n.Children) == 0 {
			t.Queries = append(t.Queries, treeattn.Query{Node: idx, Offset: n.Value - 1})
		}
		for c := len(n.Children) - 1; c >= 0; c-- {
			stack = append(stack, item{pos[n.Children[c]], idx})
		}
	}
	t.AssignContiguousSlots()
	if err := t.Validate(t.NumSlots()); err != nil {
		return nil, fmt.Errorf("full tree of %s: %w", rt.Name, err)
	}
	return t, nil
}

// Snapshot is a named single-step tree: the trees of the Targets
// table.
type Snapshot struct {
	Name        string
	Description string
	Build       func(Source) (*treeattn.Tree, error)
}

func fixed(build func() *treeattn.Tree) func(Source) (*treeattn.Tree, error) {
	return func(Source) (*treeattn.Tree, error) { return build(), nil }
}

// Snapshots are the single-step trees of the DeFT paper's evaluation.
var Snapshots = []Snapshot{
	{"fewshot-b50", "few-shot: 4000-token prompt, 50 branches of 400 tokens", fixed(func() *treeattn.Tree { return treeattn.FewShotTree(4000, 50, 400) })},
	{"fewshot-b20", "few-shot: 4000-token prompt, 20 branches of 400 tokens", fixed(func() *treeattn.Tree { return treeattn.FewShotTree(4000, 20, 400) })},
	{"spec-star-256", "speculative star: 1000-token root, 256 one-token leaves", fixed(func() *treeattn.Tree { return treeattn.SpeculativeStar(1000, 256) })},
	{"sorting", "sorting trace (" + SortingFile + "), first complete tree, all nodes at full length, every leaf a query",
		func(s Source) (*treeattn.Tree, error) {
			rt, err := s.ReasoningTree(SortingFile)
			if err != nil {
				return nil, fmt.Errorf("tree sorting: %w", err)
			}
			return FullTree(rt)
		}},
}

// FindSnapshot returns a snapshot tree by name.
func FindSnapshot(name string, src Source) (*treeattn.Tree, error) {
	for _, s := range Snapshots {
		if s.Name == name {
			return s.Build(src)
		}
	}
	return nil, fmt.Errorf("unknown tree %q (snapshots: %s)", name, strings.Join(SnapshotNames(), ", "))
}

// SnapshotNames lists the snapshot names.
func SnapshotNames() []string {
	var n []string
	for _, s := range Snapshots {
		n = append(n, s.Name)
	}
	return n
}

// WorkloadDef is a named multi-step workload from replay.
type WorkloadDef struct {
	Name        string
	Description string
	New         func(Source) (replay.Workload, error)
}

func fewShot(b int) WorkloadDef {
	return WorkloadDef{fmt.Sprintf("fewshot-b%d", b),
		fmt.Sprintf("few-shot: %d-token prompt, %d branches decoding %d tokens", replay.FewShotPrompt, b, replay.FewShotSteps),
		func(Source) (replay.Workload, error) {
			return replay.NewFewShot(replay.FewShotPrompt, b, replay.FewShotSteps)
		}}
}

func reasoning(name, file string) WorkloadDef {
	return WorkloadDef{name, "Tree-of-Thoughts trace " + file + ", one complete tree (--trace-tree) replayed iteration by iteration",
		func(s Source) (replay.Workload, error) {
			rt, err := s.ReasoningTree(file)
			if err != nil {
				return nil, err
			}
			return replay.NewReasoning(rt)
		}}
}

func speculative(size int) WorkloadDef {
	return WorkloadDef{fmt.Sprintf("spec-%d", size),
		fmt.Sprintf("speculative: %d-token tree (APPS_tree_size%d.json) over a %d-token prefix, record 0's accept lengths", size, size, replay.SpeculativePrefix),
		func(s Source) (replay.Workload, error) {
			t, err := s.SpecTree(size)
			if err != nil {
				return nil, err
			}
			return replay.NewSpeculative(t, replay.SpecOptions{})
		}}
}

// Workloads are the multi-step workloads of issue 5.
var Workloads = []WorkloadDef{
	fewShot(20), fewShot(30), fewShot(50),
	reasoning("sorting", SortingFile), reasoning("set", SetFile),
	speculative(32), speculative(64), speculative(128), speculative(256),
}

// FindWorkload returns a workload definition by name.
func FindWorkload(name string) (WorkloadDef, error) {
	for _, w := range Workloads {
		if w.Name == name {
			return w, nil
		}
	}
	return WorkloadDef{}, fmt.Errorf("unknown workload %q (workloads: %s)", name, strings.Join(WorkloadNames(), ", "))
}

// WorkloadNames lists the workload names.
func WorkloadNames() []string {
	var n []string
	for _, w := range Workloads {
		n = append(n, w.Name)
	}
	return n
}

// StepTree is one sampled decoding step.
type StepTree struct {
	// Step is the workload's step index (replay.Step.Index).
	Step int
	// Decode is the index among the workload's decode steps.
	Decode int
	Tree   *treeattn.Tree
	// Next is the tree of the decoding step after Tree, whose plan time
	// is measured with the Planner that planned Tree (what decoding
	// does): the workload's next decode step, or for a single tree (and a
	// workload's last step) treeattn.NextStep (every queried leaf one
	// token longer). NextExtends says Next only appends to Tree's nodes
	// (kvpool's Layout unchanged), so that it is planned with PlanNext's
	// promise. Nil when Tree has no slots.
	Next        *treeattn.Tree
	NextExtends bool
}

// Sampled is the part of a workload a run times.
type Sampled struct {
	Name        string
	Description string
	// DecodeSteps is the number of decode steps of the whole workload
	// (prefill steps excluded); totals are extrapolated to it.
	DecodeSteps int
	// Prefills counts the prefill steps left out.
	Prefills int
	Steps    []StepTree
}

// SingleStep returns a one-step Sampled for a snapshot or user tree.
func SingleStep(name, description string, t *treeattn.Tree) *Sampled {
	st := StepTree{Tree: t}
	st.nextStep()
	return &Sampled{Name: name, Description: description, DecodeSteps: 1, Steps: []StepTree{st}}
}

// nextStep sets Next to treeattn.NextStep of Tree.
func (st *StepTree) nextStep() {
	if st.Tree.SlotsAssigned() {
		st.Next, st.NextExtends = treeattn.NextStep(st.Tree), true
	}
}

// SampleIndices returns n evenly spaced indices in [0, m): the first and
// the last included, rounded to the nearest index; all m when n <= 0 or
// n >= m.
func SampleIndices(m, n int) []int {
	if m <= 0 {
		return nil
	}
	if n <= 0 || n >= m {
		n = m
	}
	out := make([]int, 0, n)
	for i := range n {
		k := 0
		if n > 1 {
			k = (2*i*(m-1) + (n - 1)) / (2 * (n - 1)) // round(i*(m-1)/(n-1))
		}
		out = append(out, k)
	}
	return out
}

// Layout says where the K/V slots of the sampled trees come from.
type Layout string

const (
	// LayoutContiguous takes trees from replay.Simulator: each node's
	// tokens in consecutive slots, in creation order.
	LayoutContiguous Layout = "contiguous"
	// LayoutPaged replays onto a host kvpool.Pool through
	// replay.PoolDriver, as a serving engine would: pages of
	// kvpool.DefaultPageTokens slots, forks start on fresh pages, pruned
	// pages are reused, speculative drafts take consecutive slots.
	LayoutPaged Layout = "paged"
)

// ParseLayout parses a --kv-layout value.
func ParseLayout(s string) (Layout, error) {
	switch Layout(s) {
	case LayoutContiguous, LayoutPaged:
		return Layout(s), nil
	case "":
		return LayoutContiguous, nil
	}
	return "", fmt.Errorf("unknown KV layout %q (want %s or %s)", s, LayoutContiguous, LayoutPaged)
}

// pagedBudget sizes the bookkeeping-only pool of LayoutPaged: its slots
// hold the smallest row a pool takes (head dim 4, fp32: 32 bytes of K and
// V), so this is 2^20 slots, far more than any workload keeps live.
const pagedBudget = 1 << 25

// Sample replays a workload twice (newW must return a fresh replay each
// call): once to count its decode steps (steps that are not Prefill), then
// to take the attention trees of n evenly spaced decode steps
// (SampleIndices; all when n <= 0), with slots laid out as layout says.
func Sample(name, description string, newW func() (replay.Workload, error), n int, layout Layout) (*Sampled, error) {
	w, err := newW()
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", name, err)
	}
	s := &Sampled{Name: name, Description: description}
	for st := range replay.Steps(w) {
		if st.Prefill {
			s.Prefills++
		} else {
			s.DecodeSteps++
		}
	}
	if s.DecodeSteps == 0 {
		return nil, fmt.Errorf("workload %s: no decode steps", name)
	}
	want := SampleIndices(s.DecodeSteps, n)
	if w, err = newW(); err != nil {
		return nil, fmt.Errorf("workload %s: %w", name, err)
	}
	decode := 0
	// The step after a sampled one gives its Next; layouts tell whether it
	// extends it (0: unknown, compare the trees).
	pending, pendingLayout := false, uint64(0)
	take := func(st replay.Step, tree func() (*treeattn.Tree, uint64, error)) error {
		if st.Prefill {
			return nil
		}
		k := decode
		decode++
		sampled := len(s.Steps) < len(want) && want[len(s.Steps)] == k
		if !sampled && !pending {
			return nil
		}
		t, layout, err := tree()
		if err != nil {
			return err
		}
		if pending {
			last := &s.Steps[len(s.Steps)-1]
			last.Next = t
			if layout != 0 {
				last.NextExtends = layout == pendingLayout
			} else {
				last.NextExtends = treeattn.Extends(last.Tree, t)
			}
			pending = false
		}
		if sampled {
			s.Steps = append(s.Steps, StepTree{Step: st.Index, Decode: k, Tree: t})
			pending, pendingLayout = true, layout
		}
		return nil
	}
	switch layout {
	case LayoutContiguous, "":
		_, err = replay.Run(w, func(st replay.Step, sim *replay.Simulator) error {
			return take(st, func() (*treeattn.Tree, uint64, error) {
				t, err := sim.Tree()
				return t, 0, err
			})
		})
	case LayoutPaged:
		err = replayPaged(w, take)
	default:
		err = fmt.Errorf("unknown KV layout %q", layout)
	}
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", name, err)
	}
	if pending {
		s.Steps[len(s.Steps)-1].nextStep() // the last step: no next one to replay
	}
	if len(s.Steps) != len(want) || decode != s.DecodeSteps {
		return nil, fmt.Errorf("workload %s: the second replay differs from the first (%d of %d sampled steps, %d of %d decode steps)",
			name, len(s.Steps), len(want), decode, s.DecodeSteps)
	}
	return s, nil
}

// replayPaged drives w onto a host KV pool and hands take each step's tree
// over the pool's slots (a copy: the pool's tree changes with later steps).
func replayPaged(w replay.Workload, take func(replay.Step, func() (*treeattn.Tree, uint64, error)) error) error {
	pool, err := kvpool.NewHost(kvpool.Config{Layers: 1, KVHeads: 1, HeadDim: 4, KV: treeattn.KVF32, BudgetBytes: pagedBudget})
	if err != nil {
		return err
	}
	d := replay.NewPoolDriver(pool)
	for st := range replay.Steps(w) {
		step, err := d.Begin(st)
		if err != nil {
			return err
		}
		// Layouts are counted from 1 (0 means unknown to take).
		if err := take(st, func() (*treeattn.Tree, uint64, error) { return step.Tree.Clone(), step.Layout + 1, nil }); err != nil {
			return err
		}
		if err := d.End(st); err != nil {
			return err
		}
	}
	return nil
}

// SampleWorkload samples a named workload (see Sample).
func SampleWorkload(def WorkloadDef, src Source, n int, layout Layout) (*Sampled, error) {
	return Sample(def.Name, def.Description, func() (replay.Workload, error) { return def.New(src) }, n, layout)
}

package generate

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/sample"
)

// checkBranchesAlone requires every branch to be what Plain gives alone
// with the branch's seed: the same tokens (a prefix of them for a branch
// the pool cut short), texts and stop, log-probabilities within 1e-4.
func checkBranchesAlone(t *testing.T, l loaded, prompt []int32, res *BranchesResult, opts BranchOptions) {
	t.Helper()
	for i, b := range res.Branches {
		require.Equal(t, i, b.Index)
		require.Equal(t, BranchSeed(opts.Sample.Seed, i), b.Seed)
		sp := opts.Sample
		sp.Seed = b.Seed
		alone := l.plain(t, prompt, Options{MaxTokens: opts.MaxTokens, Sample: sp})
		if b.Stop == StopPoolFull {
			require.Contains(t, b.Err, "KV pool full")
			require.LessOrEqual(t, len(b.Tokens), len(alone.Tokens))
			alone.Tokens = alone.Tokens[:len(b.Tokens)]
		} else {
			require.Equal(t, alone.Stop, b.Stop, "branch %d", i)
		}
		require.Equal(t, ids(alone.Tokens), ids(b.Tokens), "branch %d", i)
		for j, tk := range b.Tokens {
			require.Equal(t, alone.Tokens[j].Text, tk.Text, "branch %d token %d", i, j)
			require.InDelta(t, alone.Tokens[j].LogProb, tk.LogProb, 1e-4, "branch %d token %d", i, j)
		}
	}
}

// Branches of a tree give each branch's plain run with the derived seed
// (greedy and sampled, two prompts), print each branch's lines labelled,
// and free every page.
func TestBranchesEqualPlain(t *testing.T) {
	l := stories(t)
	r := gputest.Rand(t)
	cases := []struct {
		prompt string
		opts   BranchOptions
	}{
		{"Once upon a time", BranchOptions{Branches: 4, MaxTokens: 24,
			Sample: sample.Params{Temp: 1, TopK: 40, TopP: 0.95, MinP: 0.02, Seed: r.Uint64()}}},
		{"Tom had a red ball. He", BranchOptions{Branches: 3, MaxTokens: 16, Sample: sample.Params{Temp: 0.8, Seed: r.Uint64()}}},
		{"Lily", BranchOptions{Branches: 2, MaxTokens: 12}}, // greedy: both branches alike
	}
	for _, tc := range cases {
		t.Run(tc.prompt, func(t *testing.T) {
			prompt := l.prompt(t, tc.prompt)
			pt := 8
			pool := newPool(t, l.m, BranchesBudget(l.m.Config(), len(prompt), tc.opts.Branches, tc.opts.MaxTokens, pt))
			var out bytes.Buffer
			res, err := Branches(l.m, l.tok, pool, prompt, tc.opts, &out)
			require.NoError(t, err)
			require.Equal(t, pool.NumPages(), pool.FreePages())
			require.Len(t, res.Branches, tc.opts.Branches)
			checkBranchesAlone(t, l, prompt, res, tc.opts)
			// One pass per step over the live branches: as many as the
			// longest branch needed (its first token came from the prompt's
			// logits, and an EOS needs the pass that gave it).
			passes := 0
			for _, b := range res.Branches {
				n := len(b.Tokens) - 1
				if b.Stop == StopEOS {
					n++
				}
				passes = max(passes, n)
			}
			require.Len(t, res.Steps, passes)
			require.Equal(t, tc.opts.Branches, res.Steps[0].Queries)
			// The prompt's line, then every line of each branch's text
			// with the branch's label (a story may hold newlines).
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			want := 1
			for _, b := range res.Branches {
				want += strings.Count(Text(b.Tokens), "\n") + 1
			}
			require.Len(t, lines, want, out.String())
			require.Equal(t, " "+tc.prompt, lines[0])
			texts := map[int][]string{}
			for _, line := range lines[1:] {
				var i int
				_, err := fmt.Sscanf(line, "[branch %d] ", &i)
				require.NoError(t, err, "unlabelled line %q", line)
				label := fmt.Sprintf("[branch %d] ", i)
				require.True(t, strings.HasPrefix(line, label), line)
				texts[i] = append(texts[i], strings.TrimPrefix(line, label))
			}
			require.Len(t, texts, tc.opts.Branches)
			for _, b := range res.Branches {
				require.Equal(t, Text(b.Tokens), strings.Join(texts[b.Index], "\n"), "branch %d", b.Index)
			}
		})
	}
}

// A pool too small for every branch ends branches with StopPoolFull, one
// at a time, while the others go on unchanged (the same tokens as alone).
func TestBranchesPoolFull(t *testing.T) {
	l := stories(t)
	prompt := l.prompt(t, "Once upon a time")
	opts := BranchOptions{Branches: 4, MaxTokens: 40, Sample: sample.Params{Temp: 1, Seed: gputest.Rand(t).Uint64()}}
	// The prompt's pages and room for about two branches.
	pool := newPool(t, l.m, pageRound(len(prompt), 8)+2*pageRound(opts.MaxTokens, 8))
	res, err := Branches(l.m, l.tok, pool, prompt, opts, nil)
	require.NoError(t, err)
	require.Equal(t, pool.NumPages(), pool.FreePages())
	full := 0
	for _, b := range res.Branches {
		if b.Stop == StopPoolFull {
			full++
		}
	}
	t.Logf("%d of %d branches ran out of pool", full, opts.Branches)
	require.Positive(t, full)
	checkBranchesAlone(t, l, prompt, res, opts)
}

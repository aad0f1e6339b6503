package treeattn

import (
	"fmt"
	"math"

	"github.com/deft-vk/deft/kernels"
)

// Method names an attention strategy for a decoding tree.
type Method string

// The methods. All of them produce the same output; they differ in how the
// KV cache is grouped with queries, and so in memory traffic and balance.
const (
	// MethodFlatten is DeFT-Flatten: the tree's tokens laid out depth-first, cut
	// into equal blocks, each loaded once with every query that sees it
	// (KV-guided grouping) and a bitmask of which query sees which token.
	MethodFlatten Method = "flatten"
	// MethodNode is DeFT-Node: one work item per tree node, however long.
	MethodNode Method = "node"
	// MethodNodeChunk is DeFT-Node-Chunk: tree nodes split into chunks.
	MethodNodeChunk Method = "nodechunk"
	// MethodFlashDecoding is the query-guided baseline: each query reads its own
	// whole path in chunks (Flash-Decoding, radix attention).
	MethodFlashDecoding Method = "flashdecoding"
	// MethodDenseMask is the Medusa-style baseline: every query against every
	// tree token under a dense mask.
	MethodDenseMask Method = "densemask"
)

// Methods lists every method, DeFT's first.
var Methods = []Method{MethodFlatten, MethodNode, MethodNodeChunk, MethodFlashDecoding, MethodDenseMask}

// ParseMethod accepts a method name.
func ParseMethod(s string) (Method, error) {
	for _, m := range Methods {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("unknown attention method %q (have %v)", s, Methods)
}

// Limits are the device limits planning depends on (from vk.DeviceInfo).
type Limits struct {
	SharedMemory      int
	MaxInvocations    int
	MaxWorkgroupCount [3]int
	// CoopMat is the cooperative-matrix shape partial_attn's coopmat
	// variant would use (kernels.AttnCoopMatShape); zero when the device
	// cannot run that variant.
	CoopMat CoopMat
	// Decode says the device can run partial_attn's decode variant
	// (subgroup arithmetic).
	Decode bool
	// MaxStorageRange is the most bytes one storage-buffer binding may
	// cover (maxStorageBufferRange) and StorageAlignment the alignment of
	// a binding's offset; 0 means no limit (planning without a device).
	MaxStorageRange  uint64
	StorageAlignment uint64

	kvWindow int // tests: K/V window in slots, instead of the storage range's
	// tests: scalar items of at most this many rows run as a class of
	// their own (the dispatch per class that the coopmat variant makes,
	// checked on devices without cooperative matrices)
	scalarClassRows int
}

// windowSlots is how many KV slots of rowBytes one binding of K (or V) can
// cover, from a suitably aligned first slot; 0 means no limit.
func (lim Limits) windowSlots(rowBytes uint64) int {
	if lim.kvWindow > 0 {
		return lim.kvWindow
	}
	if lim.MaxStorageRange == 0 || rowBytes == 0 {
		return 0
	}
	n := lim.MaxStorageRange / rowBytes
	if a := max(lim.StorageAlignment, 1); rowBytes%a != 0 {
		// Window starts (multiples of n slots) must be aligned offsets.
		step := a / gcd(a, rowBytes)
		n -= n % step
	}
	return int(min(n, math.MaxInt32))
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Window is a range of KV slots that one dispatch of partial_attn binds,
// with the items that read it. A pool's K and V bind in windows when they
// are larger than a storage-buffer binding may be; each item's slots then
// lie in one window and are listed relative to its first slot.
type Window struct {
	SlotBase  int // first slot
	Slots     int // slots the window may bind
	FirstItem int
	Items     int
}

// CoopMat is a cooperative-matrix shape (M x K times K x N) and the
// subgroup size the coopmat variant's workgroups are made of.
type CoopMat struct {
	M, N, K  int
	Subgroup int
}

// The attention kernel's variants (kernels.PartialAttn).
const (
	VariantScalar  = "scalar"
	VariantCoopMat = "coopmat"
	// VariantCoopMatV1 is the first cooperative-matrix kernel: every item
	// in one workgroup of the largest row tile (no item classes).
	VariantCoopMatV1 = "coopmat_v1"
	// VariantDecode is the kernel for items of one query (a decoding
	// step: one sequence, flashdecoding's per-query items), on the
	// scalar variant's tiles; plans with items of several queries run
	// the scalar variant instead.
	VariantDecode = "decode"
)

// decodeSharedBytes is partial_attn_decode.comp's shared memory: Q, the
// per-subgroup maxima (room for subgroups of one), probabilities, the
// token groups' sums and the merge's list.
func (t Tiles) decodeSharedBytes(s Shape) int {
	g, d4 := s.GroupSize(), s.HeadDim/4
	tg := t.Workgroup / max(d4, 1)
	return 4*(g*s.HeadDim+2*g*t.Workgroup+tg*g*s.HeadDim+tg*g) + 2*4*t.Tokens
}

// decodeCheck reports whether the decode variant can run shape s with
// tiles t: the workgroup a multiple of D/4 (its P V step puts invocations
// along the head dim) and shared memory.
func (t Tiles) decodeCheck(s Shape, lim Limits) error {
	d4 := s.HeadDim / 4
	switch {
	case !lim.Decode:
		return fmt.Errorf("the device cannot run the decode variant")
	case t.Workgroup < d4 || t.Workgroup%d4 != 0:
		return fmt.Errorf("decode variant: workgroup %d is not a multiple of head dim / 4 = %d", t.Workgroup, d4)
	case t.decodeSharedBytes(s) > lim.SharedMemory:
		return fmt.Errorf("decode variant, tiles %+v: %d bytes of shared memory, the device has %d", t, t.decodeSharedBytes(s), lim.SharedMemory)
	}
	return nil
}

// IsCoopMat reports whether variant is one of the cooperative-matrix
// variants (fp16 KV only, tiles from ChooseCoopTiles).
func IsCoopMat(variant string) bool {
	return variant == VariantCoopMat || variant == VariantCoopMatV1
}

// Tiles are the kernel's tile sizes, chosen from the head dim and the
// device's shared memory.
type Tiles struct {
	Workgroup int // invocations per workgroup
	Tokens    int // B: tokens of K/V staged in shared memory at once
	Rows      int // R: (query, head) rows processed together
}

// sharedBytes is partial_attn.comp's shared memory for the tiles: Q rows
// and the K/V tile (vec4 rows padded by one), scores and probabilities
// ([token][row], padded), mask words, two tiles' slot lists, softmax
// scratch and row state (six words per row, sBad included).
func (t Tiles) sharedBytes(dim int) int {
	rowVec4s := dim/4 + 1
	scoreVec4s := t.Rows/4 + 1
	maskWords := (t.Rows-1)/32 + 2
	return 16*(t.Rows+t.Tokens)*rowVec4s + 2*16*t.Tokens*scoreVec4s + 4*t.Tokens*maskWords + 2*4*t.Tokens + 4*t.Workgroup + 6*4*t.Rows
}

func isPow2(v int) bool { return v > 0 && v&(v-1) == 0 }

// fits reports whether the tiles suit the kernel's thread mappings (see
// the derived constants of partial_attn.comp) and the device.
func (t Tiles) fits(s Shape, lim Limits) bool {
	return isPow2(t.Workgroup) && isPow2(t.Tokens) && isPow2(t.Rows) && t.Tokens >= 4 && t.Rows >= 4 &&
		t.Rows <= t.Workgroup && t.Tokens <= t.Workgroup && t.Rows*t.Tokens >= t.Workgroup &&
		t.Workgroup <= lim.MaxInvocations && t.sharedBytes(s.HeadDim) <= lim.SharedMemory
}

// check is fits with the reason.
func (t Tiles) check(s Shape, lim Limits) error {
	if !isPow2(t.Workgroup) || !isPow2(t.Tokens) || !isPow2(t.Rows) || t.Tokens < 4 || t.Rows < 4 ||
		t.Rows > t.Workgroup || t.Tokens > t.Workgroup || t.Rows*t.Tokens < t.Workgroup || t.Workgroup > lim.MaxInvocations {
		return fmt.Errorf("tiles %+v: sizes must be powers of two, tokens and rows at least 4 and at most the workgroup, "+
			"rows x tokens at least the workgroup, workgroup at most %d", t, lim.MaxInvocations)
	}
	if b := t.sharedBytes(s.HeadDim); b > lim.SharedMemory {
		return fmt.Errorf("tiles %+v need %d bytes of shared memory, the device has %d", t, b, lim.SharedMemory)
	}
	return nil
}

// coopTokens is the coopmat variant's token tile: K and V of 32 tokens in
// fp16 leave room for 128 rows (eight row blocks of 16) in 48 KiB at d=128.
const coopTokens = 32

// coopSharedBytes is partial_attn_coopmat.comp's shared memory: K and V
// tiles (fp16 rows padded by 16 bytes), per row block fp32 scores and fp16
// probabilities (rows padded), mask words, the slot ring of two tiles and
// per-row state (partial_attn_coopmat_v1 has no slot ring: 8 bytes per
// token fewer).
func (t Tiles) coopSharedBytes(dim int, cm CoopMat) int {
	kv := 2 * t.Tokens * (dim/4 + 2) * 8
	rows := t.Rows
	scores := rows * (t.Tokens + 4) * 4
	probs := rows * (t.Tokens/4 + 2) * 8
	maskWords := (t.Rows-1)/32 + 2
	return kv + scores + probs + 4*t.Tokens*maskWords + 2*4*t.Tokens + 4*4*t.Rows
}

// coopClassRows are the row tiles of the coopmat variant's item classes
// below the largest, in multiples of the shape's M: an item runs in the
// smallest class whose rows hold all of its rows. One row block (M rows,
// a query group at GQA 4) is the few-shot and reasoning trees' common
// item: a branch block seen by one query.
var coopClassRows = []int{1, 4}

// coopMinItems is autoBlock's fewest items for the coopmat variant: a
// 128-row workgroup takes a multiprocessor to itself (187 registers per
// invocation on the H200), so halving the blocks of a tree whose few
// queries fill 32 such items only adds waves and partials; items of one
// query group get their own shorter chunks instead (coopFewChunk).
const coopMinItems = 32

// coopFewChunk is the coopmat variant's token chunk for flatten items seen
// by one query group (run in one-subgroup workgroups, which wait about a
// global round trip per 16-token tile): short enough that the tree's
// tokens x KV heads make about coopFewWorkgroups of them (a large GPU
// keeps about as many resident: ten per multiprocessor on the H200), at
// most half a block and at least four tiles.
func coopFewChunk(block, tile, total, kvHeads int) int {
	c := ceilDiv(ceilDiv(total*kvHeads, coopFewWorkgroups), tile) * tile
	return max(4*tile, min(c, ceilDiv(block/2, tile)*tile))
}

// coopFewWorkgroups is the one-subgroup workgroups coopFewChunk aims at.
const coopFewWorkgroups = 1024

// coopMinClassWorkgroups is the fewest workgroups (items x KV heads) for
// which a smaller item class always gets a dispatch of its own; fewer run
// in the next larger class that has items if they are at most a quarter
// of its items (a dispatch costs a barrier and a ramp: the speculative
// star's single 8-token item of 64 rows is not worth one).
const coopMinClassWorkgroups = 128

// coopClasses returns the coopmat variant's item classes for the largest
// tiles big (the plan's Tiles, last): smaller row tiles in workgroups of
// one subgroup per M rows. A class of one subgroup takes tiles of 16
// tokens (or the shape's N or K, if larger): its K/V prefetch registers
// are tokens x dim / invocations, 64 at d=128 (it is left out where they
// would be more). Classes that do not fit the device are left out.
func coopClasses(s Shape, lim Limits, big Tiles, dst []Tiles) []Tiles {
	cm := lim.CoopMat
	dst = dst[:0]
	for _, m := range coopClassRows {
		r := m * cm.M
		if cm.M == 0 || r >= big.Rows {
			break
		}
		t := Tiles{Workgroup: m * cm.Subgroup, Tokens: big.Tokens, Rows: r}
		if m == 1 {
			t.Tokens = min(big.Tokens, max(16, cm.N, cm.K))
			if t.Tokens*s.HeadDim/4 > 16*t.Workgroup {
				continue // d=256: 32 vec4s of K/V in flight per invocation would spill
			}
		}
		if t.coopCheck(s, lim) == nil {
			dst = append(dst, t)
		}
	}
	return append(dst, big)
}

// coopFits reports whether the coopmat variant can run shape s with tiles t.
func (t Tiles) coopCheck(s Shape, lim Limits) error {
	cm := lim.CoopMat
	if cm.M == 0 {
		return fmt.Errorf("the device cannot run the coopmat variant")
	}
	if s.HeadDim%cm.N != 0 || s.HeadDim%cm.K != 0 {
		return fmt.Errorf("head dim %d is not a multiple of the cooperative-matrix shape %dx%dx%d", s.HeadDim, cm.M, cm.N, cm.K)
	}
	if !isPow2(t.Rows) || t.Rows%cm.M != 0 || t.Tokens%cm.N != 0 || t.Tokens%cm.K != 0 || t.Tokens%4 != 0 ||
		t.Workgroup != t.Rows/cm.M*cm.Subgroup || t.Workgroup > lim.MaxInvocations ||
		t.Rows*cm.K/4 > t.Tokens*(s.HeadDim/4+2) { // Q is staged through the K tile
		return fmt.Errorf("coopmat tiles %+v: rows a power of two and a multiple of %d, tokens a multiple of %d and %d, "+
			"workgroup %d invocations per %d rows (at most %d)", t, cm.M, cm.N, cm.K, cm.Subgroup, cm.M, lim.MaxInvocations)
	}
	if b := t.coopSharedBytes(s.HeadDim, cm); b > lim.SharedMemory {
		return fmt.Errorf("coopmat tiles %+v need %d bytes of shared memory, the device has %d", t, b, lim.SharedMemory)
	}
	return nil
}

// ChooseCoopTiles picks the coopmat variant's tiles: 32-token tiles and
// the most rows up to 128 (32 queries at GQA 4; a row block of M rows per
// subgroup) that fit shared memory, never more than 32 queries' rows (one
// mask word per token). On the H200 (f16 KV, d=128) 128 rows beat 64 on
// all four snapshot trees (fewshot-b50 380 against 489 us, b20 185/253,
// spec-star 172/232, sorting 523 us/1.70 ms).
func ChooseCoopTiles(s Shape, lim Limits) (Tiles, error) {
	if err := s.Validate(); err != nil {
		return Tiles{}, err
	}
	cm := lim.CoopMat
	var last error // made only on failure: planning a step allocates nothing
	for r := 128; cm.M > 0 && r >= cm.M; r /= 2 {
		if r > cm.M && r > 32*s.GroupSize() {
			continue
		}
		t := Tiles{Workgroup: r / cm.M * cm.Subgroup, Tokens: coopTokens, Rows: r}
		if last = t.coopCheck(s, lim); last == nil {
			return t, nil
		}
	}
	if last == nil {
		last = fmt.Errorf("the device cannot run the coopmat variant")
	}
	return Tiles{}, fmt.Errorf("choose coopmat tiles: %w", last)
}

// ChooseTiles picks the tiles with the most work per shared-memory pass
// that fit the device: 256 invocations where allowed (on the H100, 32 x 32
// tiles ran few-shot b=50 in 330 us at 256 invocations, 427 us at 128 and
// 423 us at 512; the compiler's register use, 147 vs 182 per thread, sets
// how many workgroups stay resident), rows at most 32 (a slice of 8 queries
// of a group of 4; larger row tiles waste work on the many small items of a
// tree), tokens at most 64.
func ChooseTiles(s Shape, lim Limits) (Tiles, error) {
	return chooseTiles(s, lim, 32)
}

// ChooseFewRowTiles is ChooseTiles for plans whose items have at most
// rows rows (one decoding query: the GQA group): the row tile is the
// smallest power of two >= rows (at least 4, at most 32). A 32-row tile
// on a 4-row item leaves the other 28 rows idle, and the kernel maps
// rows to threads: at 256 invocations, 32 x 32 tiles score a 4-row item
// with 32 threads, 7/8 of the workgroup waiting at each barrier, while
// 4 x 64 tiles score it with all 256 and take 64 tokens per pass.
func ChooseFewRowTiles(s Shape, lim Limits, rows int) (Tiles, error) {
	r := 4
	for r < rows && r < 32 {
		r *= 2
	}
	return chooseTiles(s, lim, r)
}

// chooseTiles is ChooseTiles with row tiles of at most maxRows.
func chooseTiles(s Shape, lim Limits, maxRows int) (Tiles, error) {
	if err := s.Validate(); err != nil {
		return Tiles{}, err
	}
	if err := CheckHeadDim(s.HeadDim); err != nil {
		return Tiles{}, fmt.Errorf("choose tiles: %w", err)
	}
	if lim.MaxInvocations < 4 {
		return Tiles{}, fmt.Errorf("choose tiles: device allows only %d invocations per workgroup", lim.MaxInvocations)
	}
	best := Tiles{}
	bestScore := -1
	for _, wg := range []int{256, 128, 64, 32, 16, 8, 4} {
		for _, b := range []int{64, 32, 16, 8, 4} {
			for _, r := range []int{32, 16, 8, 4} {
				t := Tiles{Workgroup: wg, Tokens: b, Rows: r}
				if r > maxRows || !t.fits(s, lim) {
					continue
				}
				score := wg*1_000_000 + r*b*100 + r
				if score > bestScore {
					best, bestScore = t, score
				}
			}
		}
	}
	if bestScore < 0 {
		return Tiles{}, fmt.Errorf("choose tiles: head dim %d does not fit %d bytes of shared memory", s.HeadDim, lim.SharedMemory)
	}
	return best, nil
}

// Config selects a method and the shapes a plan is made for.
type Config struct {
	Method Method
	Shape  Shape
	KV     KVType
	// Scale multiplies q·k; 0 means 1/sqrt(HeadDim).
	Scale  float64
	Limits Limits
	// BlockTokens is the flatten/densemask block and the nodechunk and
	// flashdecoding chunk size in tokens; 0 chooses from the tree and tiles.
	BlockTokens int
	// Tiles overrides the tile sizes (zero: chosen by ChooseTiles); they
	// must fit the device's shared memory.
	Tiles Tiles
	// MaxPasses bounds one workgroup's shared-memory passes (row tiles x
	// token tiles); 0 means MaxTilePasses, larger values are capped by it.
	MaxPasses int
	// SlotsUnique says the caller guarantees that no slot is used twice
	// (a kvpool step: pages belong to one node), so planning skips that
	// check, a third of planning a large tree. Slot values are still
	// checked, and the kernels never read outside the pool.
	SlotsUnique bool
	// KernelVariant selects partial_attn's variant: "" chooses (decode
	// when every item has one query and Limits.Decode allows it; else
	// coopmat where Limits.CoopMat allows it, the KV is fp16, the head dim
	// fits and queries share tokens; unless $DEFT_KERNEL_VARIANT or
	// --variant force one), VariantScalar, VariantDecode or VariantCoopMat
	// force one (coopmat falls back to scalar for fp32 KV, which it does
	// not support; decode for plans with items of several queries or
	// shapes it does not fit).
	KernelVariant string
	// Reduce selects where each query's partial results are merged:
	// ReduceAuto (""), ReduceFused or ReduceSeparate (see DevicePlan.Fused).
	// The coopmat variant always reduces separately.
	Reduce string
}

// The reductions Config.Reduce selects.
const (
	// ReduceAuto fuses the reduction into the scalar partial_attn when
	// every workgroup's merges are short: at most FuseAutoPartials partials
	// over all of its queries (one decoding query, flashdecoding's
	// one-query items), since the workgroup that comes last for a query
	// merges it while the rest of the GPU may be idle.
	ReduceAuto = ""
	// ReduceFused fuses wherever the kernel can (its scratch and loop
	// bounds allow).
	ReduceFused = "fused"
	// ReduceSeparate always runs reduce_partials.
	ReduceSeparate = "separate"
)

// FuseAutoPartials bounds, under ReduceAuto, the partials of all of one
// work item's queries: the most one workgroup may have to merge. Not yet
// measured: one query over 4001 tokens in 256-token blocks has 16; an
// 8-query slice of a few-shot prompt block about 100 (left to
// reduce_partials until measured with deft bench --reduce fused).
const FuseAutoPartials = 64

// ParseReduce accepts a Config.Reduce name ("auto" for ReduceAuto).
func ParseReduce(s string) (string, error) {
	switch s {
	case "", "auto":
		return ReduceAuto, nil
	case ReduceFused, ReduceSeparate:
		return s, nil
	}
	return "", fmt.Errorf("unknown reduction %q: want auto, fused or separate", s)
}

// IO is the memory traffic a plan causes per layer, in bytes.
type IO struct {
	KVBytes       int64 `json:"kv_bytes"`        // K and V read by the kernels (re-reads counted)
	KVUniqueBytes int64 `json:"kv_unique_bytes"` // K and V of every tree token once (the roofline's bytes; tokens no query reads included)
	MaskBytes     int64 `json:"mask_bytes"`      // bitmask words read
	PartialWrite  int64 `json:"partial_write_bytes"`
	PartialRead   int64 `json:"partial_read_bytes"`
	MetadataBytes int64 `json:"metadata_bytes"` // item table, slot lists, indices
	QueryBytes    int64 `json:"query_bytes"`    // Q read
	OutputBytes   int64 `json:"output_bytes"`   // final output written
	UniqueTokens  int   `json:"unique_tokens"`  // tokens in the tree
	PathTokens    int   `json:"path_tokens"`    // sum over queries of their path lengths
	Items         int   `json:"items"`          // work items (x KV heads = workgroups)
	Partials      int   `json:"partials"`       // (query, item) partial results
	MaskedPairs   int64 `json:"computed_pairs"` // (query, token) pairs computed, masked or not
}

// Total is every byte moved.
func (io IO) Total() int64 {
	return io.KVBytes + io.MaskBytes + io.PartialWrite + io.PartialRead + io.MetadataBytes + io.QueryBytes + io.OutputBytes
}

// Plan is the host-side schedule of one decoding step: made once per step,
// run for every layer. It holds the metadata the kernels read.
type Plan struct {
	Config
	Tiles Tiles
	// Variant is the partial_attn variant the plan is made for (its tiles
	// and query slices depend on it).
	Variant    string
	NumQueries int
	NumSlots   int
	Items      int
	Partials   int
	IO         IO
	// Windows are the KV slot ranges partial_attn binds one at a time when
	// the pool is larger than one binding may cover; nil means one binding.
	Windows []Window
	// Classes are the tiles of each item class, largest last (= Tiles):
	// the items of a class run in one dispatch per window with that
	// specialization of partial_attn. One class except in the coopmat
	// variant, where items of few rows run in small workgroups.
	Classes []Tiles
	// runs are the partial_attn dispatches: per window, the items of each
	// class (items are ordered by window, then class).
	runs []attnRun

	meta       []uint32
	itemsOff   uint32
	offsetsOff uint32
	listOff    uint32
}

// attnRun is one dispatch of partial_attn: items [first, first+items) of
// window, run with the tiles of class.
type attnRun struct {
	window, class, first, items int
}

// autoBlock sizes blocks so that a tree yields enough work items to fill a
// GPU while keeping each item several shared-memory tiles long. Flatten
// blocks start at 12 tiles (384 tokens at 32-token tiles: on the H100 that
// beat 96, 192 and 768 on all four target trees, because every workgroup
// pays a few global-memory round trips before its first tile) and halve
// while the tree would give fewer than 64 items, down to 8 tiles: on the
// H200 one query over 4001 tokens took 76 us per layer in 32-token blocks
// (126 items and partials per head), 40 in 128, 34 in 256 and 49 in 512.
// rowTiles is the row tiles of all queries, the query slices of a block
// every query sees. Trees of one row tile (a single query, or a few:
// plain decoding, a few beams) get FewRowBlockTokens, and the chunks of
// flashdecoding stay 256 tokens with 64-token tiles (8 tiles of 32, as
// measured): Config.BlockTokens (deft bench --block) overrides both.
func autoBlock(m Method, total, tile, rowTiles int) int {
	return autoBlockMin(m, total, tile, rowTiles, 64)
}

// autoBlockMin is autoBlock halving blocks while the tree gives fewer than
// minItems items.
func autoBlockMin(m Method, total, tile, rowTiles, minItems int) int {
	switch {
	case (m == MethodFlatten || m == MethodDenseMask) && rowTiles <= 1:
		return min(max(tile, FewRowBlockTokens/tile*tile), 12*tile)
	case m == MethodFlatten || m == MethodDenseMask:
		b := 12 * tile
		for b > 8*tile && ceilDiv(total, b)*rowTiles < minItems {
			b = max(8*tile, ceilDiv(b/2, tile)*tile)
		}
		return b
	default:
		return 8 * min(tile, 32)
	}
}

// FewRowBlockTokens is the flatten block of trees whose queries fit one
// row tile. On the H200 one query over 4001 tokens (32-row tiles, a
// separate reduction) took 76 us per layer in 32-token blocks, 40 in 128,
// 34 in 256 and 49 in 512; the halving rule above also ended at 256.
// With the fused reduction and few-row tiles smaller blocks may pay: sweep
// with `deft bench --block N`.
const FewRowBlockTokens = 256

// MaxTilePasses bounds the shared-memory passes (row tiles x token tiles) of
// one workgroup. Unbounded loops make long workgroups that unbalance the GPU,
// and Mesa's lavapipe (22.3) computes wrong results once a workgroup has run
// about 500 barriers (four per pass, two more per row tile), so longer
// items are cut into token chunks. Every (query, token) pair stays in
// exactly one item.
const MaxTilePasses = 48

func ceilDiv(a, b int) int { return (a + b - 1) / b }

const itemWords = kernels.ItemRecordWords

// putItem writes rec into its itemWords words of the metadata.
func putItem(dst []uint32, rec kernels.ItemRecord) {
	dst[0], dst[1], dst[2], dst[3] = rec.SlotsOff, rec.NumSlots, rec.QueriesOff, rec.NumQueries
	dst[4], dst[5], dst[6], dst[7] = rec.MaskOff, rec.MaskWords, rec.PartialBase, rec.Reserved
}

// item reads item i's record back from the metadata.
func (p *Plan) item(i int) kernels.ItemRecord {
	w := p.meta[i*itemWords : (i+1)*itemWords]
	return kernels.ItemRecord{SlotsOff: w[0], NumSlots: w[1], QueriesOff: w[2], NumQueries: w[3],
		MaskOff: w[4], MaskWords: w[5], PartialBase: w[6], Reserved: w[7]}
}

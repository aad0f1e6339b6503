// Package gputest opens the Vulkan device for tests: with the Khronos
// validation layer on (any message it reports fails the test) and a clear
// failure, never a silent skip, when no device exists.
package gputest

import (
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/deft-vk/deft/vk"
)

var (
	once   sync.Once
	shared *vk.Device
	err    error
)

// Device returns the process-wide test device, opened on first use with
// validation enabled unless DEFT_VALIDATION=0. Each test that calls it fails
// if the validation layer reported anything while it ran.
func Device(t testing.TB) *vk.Device {
	t.Helper()
	once.Do(func() {
		opts := vk.Options{Validation: os.Getenv("DEFT_VALIDATION") != "0", PipelineCacheDir: "-"}
		shared, err = vk.Open(opts)
	})
	if err != nil {
		t.Fatalf("these tests need a Vulkan device and found none usable: %v\n"+
			"On Debian/Ubuntu run tools/deps.sh (as root) for Mesa's lavapipe CPU driver and the validation layer.", err)
	}
	CheckValidation(t) // messages from before this test belong to no test: report them here
	t.Cleanup(func() { CheckValidation(t) })
	return shared
}

// CheckValidation fails t for every validation message collected so far.
func CheckValidation(t testing.TB) {
	t.Helper()
	for _, m := range vk.ValidationMessages() {
		t.Errorf("validation layer: %s", m)
	}
}

// Rand returns a generator seeded from the clock, logging the seed so a
// failure can be replayed with DEFT_SEED.
func Rand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DEFT_SEED"); s != "" {
		var v uint64
		for _, c := range s {
			if c < '0' || c > '9' {
				t.Fatalf("DEFT_SEED=%q is not a number", s)
			}
			v = v*10 + uint64(c-'0')
		}
		seed = v
	}
	t.Logf("random seed %d (rerun with DEFT_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

package kernels

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
)

// VariantEnv names the environment variable that forces kernel variants,
// like the --variant flag: "scalar" forces that variant on every kernel that
// has one; "partial_attn=scalar,matmul=coopmat" forces per kernel.
const VariantEnv = "DEFT_KERNEL_VARIANT"

var (
	ovMu     sync.Mutex
	ovLoaded bool
	ovGlobal string
	ovByName map[string]string
	ovErr    error // a malformed $DEFT_KERNEL_VARIANT
)

// SetOverride forces variants (see VariantEnv for the syntax); "" clears
// every override. Unknown kernel names are errors.
func SetOverride(s string) error {
	global, byName, err := parseOverride(s)
	if err != nil {
		return err
	}
	ovMu.Lock()
	defer ovMu.Unlock()
	ovLoaded, ovGlobal, ovByName, ovErr = true, global, byName, nil
	return nil
}

func parseOverride(s string) (string, map[string]string, error) {
	byName := map[string]string{}
	global := ""
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, variant, per := strings.Cut(part, "=")
		if !per {
			if global != "" {
				return "", nil, fmt.Errorf("kernel variant override %q: two global variants", s)
			}
			global = part
			continue
		}
		if _, err := Lookup(name); err != nil {
			return "", nil, fmt.Errorf("kernel variant override %q: %w", s, err)
		}
		if variant == "" {
			return "", nil, fmt.Errorf("kernel variant override %q: empty variant for %s", s, name)
		}
		byName[name] = variant
	}
	if global != "" {
		known := false
		for _, c := range All() {
			for _, v := range c.Variants {
				known = known || v.Name == global
			}
		}
		if !known {
			return "", nil, fmt.Errorf("kernel variant override %q: no kernel has a variant %q", s, global)
		}
	}
	return global, byName, nil
}

func loadOverride() {
	if ovLoaded {
		return
	}
	ovLoaded = true
	if env := os.Getenv(VariantEnv); env != "" {
		global, byName, err := parseOverride(env)
		if err != nil {
			// A bad environment must not pass silently: Choose reports it.
			ovErr = fmt.Errorf("$%s: %w", VariantEnv, err)
			return
		}
		ovGlobal, ovByName = global, byName
	}
}

// overrideFor returns the variant forced for kernel name, if any.
func overrideFor(name string) (string, bool) {
	ovMu.Lock()
	defer ovMu.Unlock()
	loadOverride()
	if v, ok := ovByName[name]; ok {
		return v, true
	}
	if ovGlobal != "" {
		return ovGlobal, true
	}
	return "", false
}

// overrideGlobalOnly reports whether name's override comes from a global
// variant (which kernels without that variant ignore).
func overrideGlobalOnly(name string) bool {
	ovMu.Lock()
	defer ovMu.Unlock()
	_, per := ovByName[name]
	return !per
}

// OverrideError reports a malformed $DEFT_KERNEL_VARIANT.
func OverrideError() error {
	ovMu.Lock()
	defer ovMu.Unlock()
	loadOverride()
	return ovErr
}

// Forced returns the variant forced for kernel name by SetOverride or
// $DEFT_KERNEL_VARIANT, if any (a global variant the kernel lacks counts
// as none).
func Forced(name string) (string, bool) {
	v, ok := overrideFor(name)
	if !ok {
		return "", false
	}
	if c, err := Lookup(name); err == nil && overrideGlobalOnly(name) && !slices.Contains(c.VariantNames(), v) {
		return "", false
	}
	return v, true
}

// Package shaders embeds the compiled SPIR-V of DeFT-VK's compute kernels.
// The GLSL sources sit beside this file; tools/glslc.sh compiles them into
// spv/ and `tools/glslc.sh --check` proves the committed binaries current, so
// `go install` needs no shader compiler.
package shaders

import (
	"embed"
	"fmt"
)

//go:embed spv/*.spv
var spv embed.FS

// SPIRV returns the compiled module of the kernel name (the .comp file's base name).
func SPIRV(name string) ([]byte, error) {
	b, err := spv.ReadFile("spv/" + name + ".spv")
	if err != nil {
		return nil, fmt.Errorf("load shader %s: %w", name, err)
	}
	return b, nil
}

// Names lists the embedded kernels.
func Names() []string {
	entries, _ := spv.ReadDir("spv")
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		n := e.Name()
		out = append(out, n[:len(n)-len(".spv")])
	}
	return out
}

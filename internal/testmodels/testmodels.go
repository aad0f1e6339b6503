// Package testmodels locates the small real GGUF models and reference data
// that tests read (../shared/models beside the checkout, as laid out for
// developers and CI). A missing folder fails the test with a clear message;
// it never skips.
package testmodels

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Dir returns the models folder: $DEFT_MODELS_DIR, else ../shared/models
// relative to the repository root.
func Dir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("DEFT_MODELS_DIR")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir = filepath.Join(root, "..", "shared", "models")
	}
	if _, err := os.Stat(filepath.Join(dir, "stories260K.gguf")); err != nil {
		t.Fatalf("these tests need the reference models of ../shared/models beside the checkout "+
			"(or DEFT_MODELS_DIR): %v", err)
	}
	return dir
}

// Path returns the path of name inside Dir.
func Path(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(Dir(t), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("reference file %s: %v", name, err)
	}
	return p
}

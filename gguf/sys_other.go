//go:build !linux

package gguf

import "errors"

var errPlatform = errors.New("gguf: reading GGUF files needs Linux (mmap, memfd)")

// Open is only available on Linux.
func Open(path string) (*File, error) { return nil, errPlatform }

// FromBytes is only available on Linux.
func FromBytes(name string, data []byte) (*File, error) { return nil, errPlatform }

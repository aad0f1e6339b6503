package gguf

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Open maps the GGUF file at path read-only and parses its header. Tensor
// data stays in the mapping (the kernel pages it in on use); Close unmaps it.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: open: %w", err)
	}
	defer fd.Close() // the mapping outlives the descriptor
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: open %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("gguf: open %s: not a regular file", path)
	}
	var data []byte
	if st.Size() > 0 {
		data, err = unix.Mmap(int(fd.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return nil, fmt.Errorf("gguf: map %s: %w", path, err)
		}
	}
	// The parser reads the same open file (not the path again), so a file
	// replaced meanwhile cannot make header and data disagree.
	f, err := load(path, fdPath(fd), data)
	if err != nil {
		if data != nil {
			_ = unix.Munmap(data)
		}
		return nil, err
	}
	if data != nil {
		f.release = func() error { return unix.Munmap(data) }
	}
	return f, nil
}

// FromBytes parses a GGUF file held in memory, such as a model embedded in
// the binary. Tensor data slices point into data, which must not change
// while the File is used. The parser reads files, so it is handed an
// in-memory file (memfd) holding a copy of data; nothing touches the disk.
func FromBytes(name string, data []byte) (*File, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("gguf: %s: empty file", name)
	}
	mfd, err := unix.MemfdCreate("gguf", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gguf: %s: memfd: %w", name, err)
	}
	fd := os.NewFile(uintptr(mfd), "memfd:gguf")
	defer fd.Close()
	if _, err := fd.Write(data); err != nil {
		return nil, fmt.Errorf("gguf: %s: memfd write: %w", name, err)
	}
	return load(name, fdPath(fd), data)
}

// fdPath names an open file so that opening the name opens the same file.
func fdPath(fd *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", fd.Fd()) }

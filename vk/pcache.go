package vk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	vk "github.com/vulkan-go/vulkan"
)

// pipelineCache persists a VkPipelineCache between runs, one file per device
// UUID and driver version. Our file wraps the driver's blob with a magic and
// a SHA-256 so a corrupt or foreign file is ignored instead of being handed
// to a driver that might trust it.
type pipelineCache struct {
	d      *Device
	handle vk.PipelineCache
	path   string
	dirty  bool
	// initial holds the blob the cache was created from, in C memory, until
	// the cache is destroyed: a driver may keep pointing into it (lavapipe
	// crashed in vkCreateComputePipelines when it was freed at once).
	initial arena
}

var cacheMagic = []byte("DEFTVKPC1\x00")

// PipelineCachePath is where a device's compiled pipelines are kept ("" when
// caching is off or no cache directory exists).
func (d *Device) PipelineCachePath() string {
	if d.cache == nil {
		return ""
	}
	return d.cache.path
}

func cacheFile(dir string, info DeviceInfo) string {
	if dir == "-" {
		return ""
	}
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(base, "deft-vk", "pipelines")
	}
	return filepath.Join(dir, fmt.Sprintf("%s-%08x.bin", info.UUID, info.DriverVersion))
}

func openPipelineCache(d *Device, dir string) *pipelineCache {
	c := &pipelineCache{d: d, path: cacheFile(dir, d.Info)}
	var initial []byte
	if c.path != "" {
		if raw, err := os.ReadFile(c.path); err == nil {
			initial = unwrapCache(raw, d)
		}
	}
	ci := &vk.PipelineCacheCreateInfo{SType: vk.StructureTypePipelineCacheCreateInfo}
	if len(initial) > 0 {
		ci.InitialDataSize = uint(len(initial))
		ci.PInitialData = c.initial.cbytes(initial)
	}
	var h vk.PipelineCache
	if vk.CreatePipelineCache(d.handle, ci, nil, &h) != vk.Success {
		// A rejected blob is not fatal: start empty, and without a cache at all if even that fails.
		ci = &vk.PipelineCacheCreateInfo{SType: vk.StructureTypePipelineCacheCreateInfo}
		if vk.CreatePipelineCache(d.handle, ci, nil, &h) != vk.Success {
			c.initial.free()
			return nil
		}
	}
	c.handle = h
	return c
}

// unwrapCache returns the driver blob when the file is intact and was made
// by this device and driver (the Vulkan cache header, version one).
func unwrapCache(raw []byte, d *Device) []byte {
	if len(raw) < len(cacheMagic)+sha256.Size || !bytes.Equal(raw[:len(cacheMagic)], cacheMagic) {
		return nil
	}
	sum := raw[len(cacheMagic) : len(cacheMagic)+sha256.Size]
	blob := raw[len(cacheMagic)+sha256.Size:]
	if got := sha256.Sum256(blob); !bytes.Equal(got[:], sum) {
		return nil
	}
	if len(blob) < 32 {
		return nil
	}
	headerLen := binary.LittleEndian.Uint32(blob[0:])
	version := binary.LittleEndian.Uint32(blob[4:])
	vendor := binary.LittleEndian.Uint32(blob[8:])
	device := binary.LittleEndian.Uint32(blob[12:])
	if headerLen < 32 || version != 1 || vendor != d.Info.VendorID || device != d.Info.DeviceID ||
		!bytes.Equal(blob[16:32], d.pd.cacheUUID[:]) {
		return nil
	}
	return blob
}

func (c *pipelineCache) close() error {
	defer c.initial.free()
	defer vk.DestroyPipelineCache(c.d.handle, c.handle, nil)
	if !c.dirty || c.path == "" {
		return nil
	}
	var n uint
	if vk.GetPipelineCacheData(c.d.handle, c.handle, &n, nil) != vk.Success || n == 0 {
		return nil
	}
	var a arena
	defer a.free()
	p := a.alloc(int(n))
	if err := check("vkGetPipelineCacheData", vk.GetPipelineCacheData(c.d.handle, c.handle, &n, p)); err != nil {
		return fmt.Errorf("save pipeline cache: %w", err)
	}
	blob := bytes.Clone(unsafe.Slice((*byte)(p), n))
	sum := sha256.Sum256(blob)
	out := append(append(append([]byte{}, cacheMagic...), sum[:]...), blob...)
	if err := os.MkdirAll(filepath.Dir(c.path), 0o755); err != nil {
		return fmt.Errorf("save pipeline cache: %w", err)
	}
	tmp := c.path + ".tmp-" + hex.EncodeToString(sum[:4])
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return fmt.Errorf("save pipeline cache: %w", err)
	}
	if err := os.Rename(tmp, c.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save pipeline cache: %w", err)
	}
	return nil
}

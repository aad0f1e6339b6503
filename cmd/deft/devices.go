package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/deft-vk/deft/kernels"
	"github.com/deft-vk/deft/treeattn"
	"github.com/deft-vk/deft/vk"
)

func options(c *cli.Context) vk.Options {
	return vk.Options{Device: c.String("device"), Validation: c.Bool("validation")}
}

// parseMethods reads the repeatable --method flag (nil when not given).
func parseMethods(c *cli.Context) ([]treeattn.Method, error) {
	var methods []treeattn.Method
	for _, s := range c.StringSlice("method") {
		m, err := treeattn.ParseMethod(s)
		if err != nil {
			return nil, err
		}
		methods = append(methods, m)
	}
	return methods, nil
}

// openDevice opens the chosen device. The returned closer, deferred with the
// command's named error, closes it and turns validation messages into that
// error when there is none yet.
func openDevice(c *cli.Context) (*vk.Device, func(*error), error) {
	if err := applyVariant(c); err != nil {
		return nil, nil, err
	}
	d, err := vk.Open(options(c))
	if err != nil {
		return nil, nil, err
	}
	closeDevice := func(errp *error) {
		err := d.Close()
		if msgs := vk.ValidationMessages(); len(msgs) > 0 {
			err = fmt.Errorf("validation layer reported %d messages:\n%s", len(msgs), strings.Join(msgs, "\n"))
		}
		if *errp == nil {
			*errp = err
		}
	}
	return d, closeDevice, nil
}

// applyVariant installs the --variant override (also $DEFT_KERNEL_VARIANT).
// "all" forces nothing: conformance and bench then run every variant the
// device supports side by side (see attnVariants).
func applyVariant(c *cli.Context) error {
	if v := c.String("variant"); v == "all" {
		return kernels.SetOverride("")
	} else if v != "" {
		if err := kernels.SetOverride(v); err != nil {
			return fmt.Errorf("--variant: %w", err)
		}
	}
	return nil
}

// kernelVariant is one kernel's chosen variant as `deft devices` shows it.
type kernelVariant struct {
	Kernel   string   `json:"kernel"`
	Variant  string   `json:"variant"`
	Forced   bool     `json:"forced,omitempty"`
	Rejected []string `json:"rejected,omitempty"`
	Error    string   `json:"error,omitempty"`
}

func kernelVariants(info *vk.DeviceInfo) []kernelVariant {
	var out []kernelVariant
	for _, kc := range kernels.Describe(info) {
		kv := kernelVariant{Kernel: kc.Kernel, Variant: kc.Variant.Name, Forced: kc.Forced, Rejected: kc.Rejected}
		if kc.Err != nil {
			kv.Variant, kv.Error = "none", kc.Err.Error()
		}
		out = append(out, kv)
	}
	return out
}

func devicesCommand() *cli.Command {
	return &cli.Command{
		Name:  "devices",
		Usage: "list Vulkan devices and their compute capabilities",
		Flags: []cli.Flag{jsonFlag, validationFlag, deviceFlag, variantFlag},
		Action: func(c *cli.Context) error {
			if err := applyVariant(c); err != nil {
				return err
			}
			inst, err := vk.NewInstance(options(c))
			if err != nil {
				return err
			}
			defer inst.Close()
			devs := inst.Devices()
			chosen, selErr := vk.SelectDevice(devs, c.String("device"))
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				type device struct {
					vk.DeviceInfo
					Kernels []kernelVariant `json:"kernels"`
				}
				out := make([]device, len(devs))
				for i := range devs {
					out[i] = device{devs[i], kernelVariants(&devs[i])}
				}
				if err := enc.Encode(struct {
					Default int      `json:"selected"`
					Devices []device `json:"devices"`
				}{chosen, out}); err != nil {
					return err
				}
				return selErr
			}
			for _, d := range devs {
				printDevice(c.App.Writer, d, d.Index == chosen)
			}
			if selErr != nil {
				return selErr
			}
			return nil
		},
	}
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func printDevice(w io.Writer, d vk.DeviceInfo, selected bool) {
	mark := ""
	if selected {
		mark = "  (selected)"
	}
	fmt.Fprintf(w, "[%d] %s%s\n", d.Index, d.Name, mark)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string, args ...any) { fmt.Fprintf(tw, "    %s\t"+v+"\n", append([]any{k}, args...)...) }
	row("type", "%s", d.Type)
	row("vendor / device id", "%#04x / %#04x", d.VendorID, d.DeviceID)
	row("Vulkan", "%s", d.APIVersion)
	row("driver", "%s %s (version %#x)", d.DriverName, d.DriverInfo, d.DriverVersion)
	row("uuid", "%s", d.UUID)
	sg := fmt.Sprintf("%d", d.SubgroupSize)
	if d.MinSubgroupSize > 0 {
		sg += fmt.Sprintf(" (range %d..%d, size control %s, full subgroups %s)", d.MinSubgroupSize, d.MaxSubgroupSize, yes(d.SubgroupSizeControl), yes(d.ComputeFullSubgroups))
	}
	row("subgroup size", "%s", sg)
	row("subgroup ops", "%s", strings.Join(d.SubgroupOps, " "))
	row("16-bit storage", "%s", yes(d.Storage16Bit))
	row("shaderFloat16", "%s", yes(d.ShaderFloat16))
	row("int8/16/64", "%s/%s/%s", yes(d.ShaderInt8), yes(d.ShaderInt16), yes(d.ShaderInt64))
	cm := yes(d.CooperativeMatrix)
	if len(d.CoopMatShapes) > 0 {
		var shapes []string
		for _, s := range d.CoopMatShapes {
			shapes = append(shapes, s.String())
		}
		cm += fmt.Sprintf(" (%d shapes: %s)", len(shapes), strings.Join(shapes, ", "))
	}
	row("cooperative matrix", "%s", cm)
	row("shared memory", "%d bytes", d.MaxSharedMemory)
	row("workgroup", "%d invocations, size %v, count %v", d.MaxWorkgroupInvocs, d.MaxWorkgroupSize, d.MaxWorkgroupCount)
	row("storage buffer range", "%d bytes", d.MaxStorageBufferRange)
	row("timestamps", "%s (period %.3g ns, %d valid bits)", yes(d.Timestamps), d.TimestampPeriod, d.TimestampBits)
	var heaps []string
	for _, h := range d.MemoryHeaps {
		kind := "host"
		if h.DeviceLocal {
			kind = "device-local"
		}
		heaps = append(heaps, fmt.Sprintf("%.1f GiB %s", float64(h.Size)/(1<<30), kind))
	}
	row("memory heaps", "%s", strings.Join(heaps, ", "))
	row("unified memory", "%s", yes(d.UnifiedMemory))
	for _, kv := range kernelVariants(&d) {
		v := kv.Variant
		if kv.Forced {
			v += " (forced)"
		}
		if len(kv.Rejected) > 0 {
			v += " (not " + strings.Join(kv.Rejected, "; not ") + ")"
		}
		if kv.Error != "" {
			v += ": " + kv.Error
		}
		row("kernel "+kv.Kernel, "%s", v)
	}
	tw.Flush()
}

// attnVariants lists the partial_attn variants to run side by side: every
// variant d supports with --variant all (or, when byDefault, without
// --variant); nil otherwise (the device's choice, or the forced one).
func attnVariants(c *cli.Context, d *vk.Device, byDefault bool) []string {
	v := c.String("variant")
	if v != "all" && (v != "" || !byDefault) {
		return nil
	}
	var out []string
	for _, variant := range kernels.PartialAttn.Variants {
		if variant.Requires == nil || variant.Requires(&d.Info) == nil {
			out = append(out, variant.Name)
		}
	}
	if len(out) < 2 && v != "all" {
		return nil
	}
	return out
}

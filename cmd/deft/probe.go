package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/deft-vk/deft/bench"
	"github.com/deft-vk/deft/probe"
	"github.com/deft-vk/deft/vk"
)

func probeCommand() *cli.Command {
	return &cli.Command{
		Name:  "probe",
		Usage: "measure the device's memory bandwidth (the roofline benchmarks compare with)",
		Flags: []cli.Flag{deviceFlag, validationFlag, variantFlag, jsonFlag,
			&cli.Uint64Flag{Name: "mib", Usage: "MiB per buffer; results with buffers smaller than the default are printed but not saved as the roofline (they may fit in a cache)",
				DefaultText: "256, less on small devices"},
			&cli.IntFlag{Name: "runs", Value: 20, Usage: fmt.Sprintf("timed runs, 1..%d; the median is reported", probe.MaxRuns)},
		},
		Action: func(c *cli.Context) (err error) {
			// Ranges first: no device work for flags that cannot run.
			if r := c.Int("runs"); r < 1 || r > probe.MaxRuns {
				return fmt.Errorf("--runs %d: want 1..%d (one command buffer holds %d GPU timestamps)", r, probe.MaxRuns, vk.MaxTimestamps)
			}
			mib := c.Uint64("mib")
			if c.IsSet("mib") && (mib < 1 || mib > 1<<20) {
				return fmt.Errorf("--mib %d: want 1..%d (1 TiB)", mib, 1<<20)
			}
			d, closeDevice, err := openDevice(c)
			if err != nil {
				return err
			}
			defer closeDevice(&err)
			res, err := probe.Run(d, probe.Options{Bytes: mib << 20, Runs: c.Int("runs")})
			if err != nil {
				return err
			}
			// Benchmarks compare with the saved roofline: a figure from
			// buffers that may sit in a cache would inflate it.
			if def := probe.DefaultBytes(&d.Info); res.BufferBytes < def {
				fmt.Fprintf(c.App.ErrWriter, "deft: not saved as the roofline: 2 x %d MiB buffers may fit in the device's caches (the saved roofline uses %d MiB or more)\n",
					res.BufferBytes>>20, def>>20)
			} else if err := probe.Save(res); err != nil {
				fmt.Fprintln(c.App.ErrWriter, "deft: warning:", err)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintf(c.App.Writer, "device     %s (%s)\n", res.Device, res.Driver)
			fmt.Fprintf(c.App.Writer, "copy       %.1f GB/s median, %.1f GB/s best (%d runs, 2 x %d MiB, read + written bytes over GPU time)\n",
				res.BytesPerSec/1e9, res.PeakPerSec/1e9, res.Runs, res.BufferBytes>>20)
			fmt.Fprintf(c.App.Writer, "saxpy      %.1f GB/s median (12 bytes per element)\n", res.SaxpyPerSec/1e9)
			fmt.Fprintf(c.App.Writer, "fp32 FMA   %s median (register-only FMA chains, 2 flops per FMA)\n", bench.FormatFlops(res.FMAFlopsPerSec))
			return nil
		},
	}
}

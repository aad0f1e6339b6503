package main

import (
	"encoding/json"
	"fmt"
	"github.com/deft-vk/deft/bench"

	"github.com/urfave/cli/v2"

	"github.com/deft-vk/deft/probe"
)

func probeCommand() *cli.Command {
	return &cli.Command{
		Name:  "probe",
		Usage: "measure the device's memory bandwidth (the roofline benchmarks compare with)",
		Flags: []cli.Flag{deviceFlag, validationFlag, variantFlag, jsonFlag,
			&cli.Uint64Flag{Name: "mib", Usage: "MiB per buffer (default 256, less on small devices)"},
			&cli.IntFlag{Name: "runs", Value: 20, Usage: "timed runs; the median is reported"},
		},
		Action: func(c *cli.Context) (err error) {
			d, closeDevice, err := openDevice(c)
			if err != nil {
				return err
			}
			defer closeDevice(&err)
			if c.Uint64("mib") > 1<<20 {
				return fmt.Errorf("--mib %d: at most %d (1 TiB)", c.Uint64("mib"), 1<<20)
			}
			res, err := probe.Run(d, probe.Options{Bytes: c.Uint64("mib") << 20, Runs: c.Int("runs")})
			if err != nil {
				return err
			}
			if err := probe.Save(res); err != nil {
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

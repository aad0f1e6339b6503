// Command deft is DeFT-VK's command line: device listing, the rooflines
// probe, tree attention from files, conformance, benchmarks and text
// generation with GGUF Llama models.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/deft-vk/deft/kernels"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "deft:", err)
		os.Exit(1)
	}
}

var (
	deviceFlag = &cli.StringFlag{
		Name:        "device",
		Usage:       "Vulkan device: an index from 'deft devices' or a name substring",
		DefaultText: "the best by type",
		EnvVars:     []string{"DEFT_DEVICE"},
	}
	validationFlag = &cli.BoolFlag{
		Name:    "validation",
		Usage:   "enable the Khronos validation layer and fail on any message",
		EnvVars: []string{"DEFT_VALIDATION"},
	}
	jsonFlag    = &cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"}
	variantFlag = &cli.StringFlag{
		Name:        "variant",
		Usage:       "force kernel variants: a variant name (scalar, coopmat, ...) for every kernel that has it, or kernel=variant,...; all: conformance and bench run every partial_attn variant the device supports (conformance does by default)",
		DefaultText: "chosen from the device's features",
		EnvVars:     []string{kernels.VariantEnv},
	}
)

func newApp() *cli.App {
	return &cli.App{
		Name:  "deft",
		Usage: "portable tree attention for LLM decoding on Vulkan GPUs",
		Commands: []*cli.Command{
			devicesCommand(),
			probeCommand(),
			conformanceCommand(),
			attentionCommand(),
			benchCommand(),
			generateCommand(),
			modelCommand(),
		},
	}
}

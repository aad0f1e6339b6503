package model

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/deft-vk/deft/internal/gputest"
	"github.com/deft-vk/deft/modelgen"
)

// BenchmarkLoadRandom times LoadRandom of a shape ($DEFT_RANDOM_SHAPE,
// default tiny) in every weight type: weights generated on the device,
// reported in GB/s of weights. On a GPU:
//
//	DEFT_RANDOM_SHAPE=llama3-8b go test -run XXX -bench LoadRandom -benchtime 1x ./model/
func BenchmarkLoadRandom(b *testing.B) {
	d := gputest.Device(b)
	shape := os.Getenv("DEFT_RANDOM_SHAPE")
	if shape == "" {
		shape = "tiny"
	}
	cfg, err := modelgen.ShapeConfig(shape)
	if err != nil {
		b.Fatal(err)
	}
	for _, typ := range modelgen.TypeNames() {
		b.Run(shape+"/"+typ, func(b *testing.B) {
			types, err := modelgen.TensorTypes(typ, cfg)
			if err != nil {
				b.Fatal(err)
			}
			var bytes uint64
			var total time.Duration
			for b.Loop() {
				start := time.Now()
				m, err := LoadRandom(d, RandomSpec{Config: cfg, TensorType: types, Seed: 1}, Options{})
				if err != nil {
					if strings.Contains(err.Error(), "not supported by the kernels") || strings.Contains(err.Error(), "does not fit") {
						b.Skipf("%s %s: %v", shape, typ, err)
					}
					b.Fatal(err)
				}
				total += time.Since(start)
				bytes = m.WeightBytes()
				m.Close()
			}
			secs := total.Seconds() / float64(b.N)
			b.ReportMetric(float64(bytes)/1e9, "GB")
			b.ReportMetric(float64(bytes)/1e9/secs, "GB/s")
			b.ReportMetric(secs, "s/load")
		})
	}
}

#!/usr/bin/env bash
# The main job: list the Vulkan devices, measure the default device's memory
# bandwidth (the roofline), then check every attention kernel on it against
# the CPU reference. Extra arguments go to every deft command (e.g. --device 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools/deps.sh
mkdir -p .bin
go build -o .bin/deft ./cmd/deft
.bin/deft devices "$@"
.bin/deft probe "$@"
.bin/deft conformance "$@"

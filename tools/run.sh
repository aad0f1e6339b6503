#!/usr/bin/env bash
# The main job: list the Vulkan devices, measure the default device's memory
# bandwidth (the roofline), check every attention kernel on it against the
# CPU reference, generate a short story, then a short benchmark of the
# methods. Extra arguments go to
# every deft command (e.g. --device 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools/deps.sh
mkdir -p .bin
go build -o .bin/deft ./cmd/deft
.bin/deft devices "$@" | tee .bin/devices.txt
.bin/deft probe "$@"
.bin/deft conformance "$@"
# A short story from the embedded TinyStories model, greedy.
.bin/deft generate --n 60 --temp 0 "$@"
# Llama-3-8B shapes on a GPU; on a CPU device (lavapipe) an eighth of the
# heads, which keeps the benchmark to about half a minute.
type=$(awk '/\(selected\)/ {s = 1} s && $1 == "type" {print $2; exit}' .bin/devices.txt)
if [[ $type == cpu ]]; then
  .bin/deft bench --quiet --tree spec-star-256 --model llama3-8b --q-heads 4 --kv-heads 1 --runs 3 --warm-up 0 "$@"
else
  .bin/deft bench --quiet --tree fewshot-b50 --tree spec-star-256 --runs 20 "$@"
fi

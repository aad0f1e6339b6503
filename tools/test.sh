#!/usr/bin/env bash
# Runs all DeFT-VK tests with the Khronos validation layer on.
#   tools/test.sh [go test flags...]     e.g. tools/test.sh -run TestAttention -v
# DEFT_VALIDATION=1 makes the Go runtime enable VK_LAYER_KHRONOS_validation itself, so
# VK_LOADER_LAYERS_ENABLE is cleared to avoid forcing the layer from outside.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tools/deps.sh

unset VK_LOADER_LAYERS_ENABLE
export DEFT_VALIDATION=1
# Test packages run in parallel processes; Mesa's on-disk shader cache is
# shared between them, and one lavapipe crash in vkCreateComputePipelines
# was seen only with several processes compiling at once. Each test compiles
# its kernels anyway, so the cache buys nothing here.
export MESA_SHADER_CACHE_DISABLE=${MESA_SHADER_CACHE_DISABLE:-true}
# A package may take minutes on a loaded 2-core machine; the whole suite stays
# well under 20 (CI stops at 90).
exec go test -timeout 20m ./... "$@"

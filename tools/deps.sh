#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages DeFT-VK needs; quiet when everything is present.
#
#   tools/deps.sh            runtime + tests: Vulkan loader, Mesa drivers (lavapipe),
#                            Khronos validation layer, gcc (cgo)
#   tools/deps.sh --shaders  additionally the shader toolchain used by tools/glslc.sh
#                            (spirv-tools, and what is needed to build glslang)
#
# As root, missing packages are installed with apt-get; otherwise the exact sudo command
# is printed and the script exits 1. Go itself is not installed from apt (the distro
# versions are too old): the script fails with instructions if `go` is missing.
set -euo pipefail

pkgs=(libvulkan1 mesa-vulkan-drivers vulkan-validationlayers gcc libc6-dev ca-certificates)
case ${1:-} in
  "") ;;
  --shaders) pkgs+=(spirv-tools cmake g++ make python3) ;;
  -h | --help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--shaders]" >&2; exit 2 ;;
esac

die() { echo "deps.sh: error: $*" >&2; exit 1; }

command -v dpkg-query >/dev/null ||
  die "not a Debian/Ubuntu system; install the equivalents of: ${pkgs[*]}"

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "deps.sh: installing ${missing[*]}" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "deps.sh: missing packages: ${missing[*]}" >&2
    echo "run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

if ! command -v go >/dev/null; then
  die "go not found on PATH. DeFT-VK needs Go 1.26: download go1.26.x.linux-amd64.tar.gz (or -arm64) from https://go.dev/dl/, extract it with 'sudo tar -C /usr/local -xzf go1.26*.tar.gz' and add /usr/local/go/bin to PATH"
fi
goversion=$(go env GOVERSION 2>/dev/null || true)
if [[ $goversion =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] < 26)); then
  echo "deps.sh: warning: $goversion found; go.mod needs Go 1.26 (go will try to fetch that toolchain unless GOTOOLCHAIN=local)" >&2
fi

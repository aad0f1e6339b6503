#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages DeFT-VK needs; quiet when everything is present.
#
#   tools/deps.sh            runtime + tests: Vulkan loader, Mesa drivers (lavapipe),
#                            Khronos validation layer, gcc (cgo)
#   tools/deps.sh --shaders  additionally the shader toolchain used by tools/glslc.sh
#                            (spirv-tools, and what is needed to build glslang)
#
# As root, missing packages are installed with apt-get, whose output is shown, and their
# versions are listed; otherwise the exact sudo command is printed and the script exits 1.
# When another process holds the package manager's lock (unattended upgrades, a parallel
# CI job), apt-get waits for it up to $DEFT_APT_LOCK_TIMEOUT seconds (default 600)
# instead of failing at once. Go itself is not installed from apt (the distro versions are
# too old): the script fails with instructions if `go` is missing.
set -euo pipefail

pkgs=(libvulkan1 mesa-vulkan-drivers vulkan-validationlayers gcc libc6-dev ca-certificates)
case ${1:-} in
  "") ;;
  --shaders) pkgs+=(spirv-tools cmake g++ make python3) ;;
  -h | --help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--shaders]" >&2; exit 2 ;;
esac

die() { echo "deps.sh: error: $*" >&2; exit 1; }

lock_wait=${DEFT_APT_LOCK_TIMEOUT:-600}
[[ $lock_wait =~ ^[0-9]+$ ]] || die "DEFT_APT_LOCK_TIMEOUT=$lock_wait: want whole seconds"

# apt_get ARGS...: apt-get, waiting up to $lock_wait seconds for locks another process
# holds. DPkg::Lock::Timeout makes apt wait for dpkg's lock itself; the retries cover the
# locks older apt releases do not wait for (the package lists' during update).
apt_get() {
  local deadline=$((SECONDS + lock_wait)) log rc
  log=$(mktemp "${TMPDIR:-/tmp}/deft-deps.XXXXXX")
  while :; do
    set +e
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$lock_wait" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc != 0)) && ((SECONDS < deadline)) &&
      grep -qE 'Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock' "$log"; then
      echo "deps.sh: another process holds the package manager's lock; retrying (waiting up to ${lock_wait}s in all)" >&2
      sleep "${DEFT_APT_LOCK_POLL:-5}"
      continue
    fi
    rm -f "$log"
    return "$rc"
  done
}

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
    apt_get update -q || die "apt-get update failed"
    apt_get install -y -q --no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
    echo "deps.sh: installed:" >&2
    dpkg-query -W -f='  ${Package} ${Version}\n' "${missing[@]}" >&2
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

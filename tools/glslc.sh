#!/usr/bin/env bash
# Shader toolchain for DeFT-VK: compiles shaders/*.comp to shaders/spv/<name>.spv.
#
#   tools/glslc.sh            compile all kernels, update shaders/spv/ (only changed files
#                             are rewritten; .spv files without a source are removed)
#   tools/glslc.sh --check    compile into a temp dir and compare with shaders/spv/*.spv;
#                             exit 1 listing differing / missing / stale files
#   tools/glslc.sh --compiler set up the pinned compiler if needed and print its path
#
# Compiler: glslang from Debian trixie's source package 15.1.0+1.4.309.0-1, which reports
# version 15.2.0 (see WANT_VERSION below; bookworm's glslang 12 is too old for
# GL_KHR_cooperative_matrix). A `glslang`/`glslangValidator` on PATH is used if it reports
# exactly that version; otherwise glslang is built once from the trixie source package into
# ${XDG_CACHE_HOME:-$HOME/.cache}/deft-vk/glslang-15.1/ and reused from there.
#
# Per-shader options, as comments in the first 10 lines of a .comp file:
#   // glslc-target: vulkan1.3                  target env (default vulkan1.2)
#   // glslc-spirv-val: --scalar-block-layout   extra spirv-val flags
# --scalar-block-layout is added automatically when the shader (or a file it includes)
# enables GL_EXT_scalar_block_layout.
#
# Output is deterministic: no optimisation, no debug info (-g is never passed), sources are
# passed by repo-relative path, and the compiler version is pinned.
#
# Environment: GLSLANG=/path/to/glslang forces a compiler (must still report WANT_VERSION);
# DEFT_DEBIAN_MIRROR=<uri> overrides the Debian archive URI taken from the apt sources.
set -euo pipefail

# The pinned compiler is glslang from Debian trixie's source package
# glslang 15.1.0+1.4.309.0-1. Despite the Debian version, that package is the upstream
# vulkan-sdk-1.4.309.0 snapshot, whose CHANGES.md (and hence `glslang --version`) says
# 15.2.0; trixie's own glslang-tools binary reports the same. Output is only byte-identical
# for one compiler build, so we pin what `--version` reports plus the exact source tarball.
readonly WANT_VERSION=15.2.0
readonly SRC_SUITE=trixie
readonly SRC_ORIG=glslang_15.1.0+1.4.309.0.orig.tar.gz
readonly SRC_ORIG_SHA256=180f17ea51e6b71bf57b9e0fea78ba3ecd76e3ec8e4c91f0771b922eb22bf4b2
readonly DEFAULT_TARGET=vulkan1.2

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
cd "$repo_root"

cache_root=${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/deft-vk
cache_dir=$cache_root/glslang-15.1

die() { echo "glslc.sh: error: $*" >&2; exit 1; }
log() { echo "glslc.sh: $*" >&2; }

tmp_dirs=()
cleanup() {
  local d
  for d in "${tmp_dirs[@]+"${tmp_dirs[@]}"}"; do rm -rf -- "$d"; done
}
trap cleanup EXIT
# new_tmp: creates a temp dir removed on exit and stores its path in $tmp. (Not used via
# $(...), as the registration would be lost in the subshell.)
new_tmp() {
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/deft-glslc.XXXXXX")
  tmp_dirs+=("$tmp")
}

# glslang_version BIN -> prints e.g. "15.2.0" ("Glslang Version: 11:15.2.0" -> "15.2.0").
glslang_version() {
  "$1" --version 2>/dev/null |
    sed -n 's/^Glslang Version:[[:space:]]*\([0-9]*:\)\{0,1\}\([0-9][0-9.]*\).*$/\2/p' |
    head -n 1
}

is_wanted_glslang() {
  [[ -x $1 ]] && [[ "$(glslang_version "$1")" == "$WANT_VERSION" ]]
}

# ---------------------------------------------------------------------------------------
# Building glslang from Debian trixie's source package (cache dir named after its 15.1).
# ---------------------------------------------------------------------------------------

# Prints "URI" of the Debian archive ('main' component, a plain release suite such as
# bookworm, not -security/-updates) configured in this machine's apt sources.
debian_archive_uri() {
  if [[ -n ${DEFT_DEBIAN_MIRROR:-} ]]; then
    printf '%s\n' "$DEFT_DEBIAN_MIRROR"
    return
  fi
  local files=() f
  [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] && files+=("$f")
  done
  ((${#files[@]})) || return 1
  # Emit "URI SUITE" for every deb/deb-src entry that has component main, for both the
  # one-line format and deb822 (.sources) stanzas; pick the first with a plain suite.
  awk '
    function flush(   i, j, k, nu, ns, nt, u, s, t, hasdeb, hasmain, c, nc) {
      if (st_uris == "") { reset(); return }
      if (tolower(st_enabled) == "no") { reset(); return }
      nt = split(st_types, t, " "); hasdeb = 0
      for (i = 1; i <= nt; i++) if (t[i] == "deb" || t[i] == "deb-src") hasdeb = 1
      nc = split(st_comps, c, " "); hasmain = 0
      for (i = 1; i <= nc; i++) if (c[i] == "main") hasmain = 1
      if (hasdeb && hasmain) {
        nu = split(st_uris, u, " "); ns = split(st_suites, s, " ")
        for (j = 1; j <= nu; j++) for (k = 1; k <= ns; k++) print u[j], s[k]
      }
      reset()
    }
    function reset() { st_types = st_uris = st_suites = st_comps = st_enabled = "" }
    FILENAME ~ /\.sources$/ {
      if (FNR == 1) flush()
      if ($0 ~ /^[ \t]*#/) next
      if ($0 ~ /^[ \t]*$/) { flush(); next }
      line = $0; key = tolower(line); sub(/:.*/, "", key)
      val = line; sub(/^[^:]*:[ \t]*/, "", val)
      if (key == "types") st_types = val
      else if (key == "uris") st_uris = val
      else if (key == "suites") st_suites = val
      else if (key == "components") st_comps = val
      else if (key == "enabled") st_enabled = val
      next
    }
    {
      flush()
      sub(/#.*/, "")
      if (NF < 4 || ($1 != "deb" && $1 != "deb-src")) next
      i = 2
      if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      if (i + 2 > NF) next
      for (k = i + 2; k <= NF; k++) if ($k == "main") { print $i, $(i + 1); break }
    }
    END { flush() }
  ' "${files[@]}" |
    awk '$1 !~ /^cdrom:/ && $2 !~ /[-\/]/ { print $1; found = 1; exit }
         END { if (!found) exit 1 }'
}

# Makes sure the tools needed to build glslang exist; installs them as root.
ensure_build_tools() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v g++ >/dev/null || missing+=(g++)
  command -v make >/dev/null || missing+=(make)
  command -v python3 >/dev/null || missing+=(python3)
  command -v apt-get >/dev/null || die "apt-get not found: building glslang needs a Debian-based system (or put glslang $WANT_VERSION on PATH)"
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -eq 0 ]]; then
    log "installing build tools: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    die "building glslang needs: ${missing[*]}; run: sudo apt-get install -y --no-install-recommends ${missing[*]}"
  fi
}

# Downloads the glslang source package from trixie into DIR (cwd-independent).
#
# Verification: apt checks the InRelease signature of trixie against the Debian archive
# keyring, then the Sources index hash against InRelease, then each downloaded file
# (.dsc, orig tarball) against the hashes in Sources. We never use [trusted=yes] or
# --allow-unauthenticated. bookworm's debian-archive-keyring >= 2023.3+deb12u1 already
# ships the trixie release keys (the 2025 keys); if this machine's keyring is older, the
# signature check fails with NO_PUBKEY and we upgrade debian-archive-keyring from the
# machine's own (already trusted) bookworm sources, the documented way to get new
# release keys, then retry. On top of apt's chain, the orig tarball's SHA-256 is checked
# against the .dsc and against the value pinned in SRC_ORIG_SHA256 (so a changed or
# tampered source can never silently produce a different compiler).
fetch_glslang_source() {
  local dir=$1 uri keyring apt_opts=() out
  uri=$(debian_archive_uri) ||
    die "no Debian archive with component 'main' found in /etc/apt/sources.list{,.d/}; set DEFT_DEBIAN_MIRROR=<debian archive URI>"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/dl"
  if [[ -f $keyring ]]; then
    echo "deb-src [signed-by=$keyring] $uri $SRC_SUITE main" >"$dir/sources.list"
  else
    echo "deb-src $uri $SRC_SUITE main" >"$dir/sources.list"
  fi
  apt_opts=(
    -o "Dir::Etc::SourceList=$dir/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$dir/lists"
    -o "Dir::Cache=$dir/cache"
    -o "Acquire::Languages=none"
  )
  # As root apt drops to the _apt user for downloads; let it write into our private dirs.
  if [[ $(id -u) -eq 0 ]] && getent passwd _apt >/dev/null; then
    chmod 755 "$dir"
    chown -R _apt "$dir/lists" "$dir/cache" "$dir/dl"
  fi
  log "fetching glslang source from $uri ($SRC_SUITE main)"
  local attempt
  for attempt in 1 2; do
    if out=$(apt-get "${apt_opts[@]}" update 2>&1) &&
      ! grep -qE '^E:|GPG error|NO_PUBKEY|EXPKEYSIG|KEYEXPIRED' <<<"$out"; then
      break
    fi
    if [[ $attempt -eq 1 ]] && grep -qE 'NO_PUBKEY|EXPKEYSIG|KEYEXPIRED' <<<"$out"; then
      if [[ $(id -u) -eq 0 ]]; then
        log "trixie Release key not in local keyring; upgrading debian-archive-keyring from the system's trusted sources"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --only-upgrade debian-archive-keyring >/dev/null
        continue
      fi
      printf '%s\n' "$out" >&2
      die "trixie's Release key is missing from the local debian-archive-keyring; run: sudo apt-get update && sudo apt-get install --only-upgrade debian-archive-keyring"
    fi
    printf '%s\n' "$out" >&2
    die "apt-get update for $SRC_SUITE sources failed (signature or network problem)"
  done
  (cd "$dir/dl" && apt-get "${apt_opts[@]}" source --download-only glslang >/dev/null 2>"$dir/source.err") || {
    cat "$dir/source.err" >&2
    die "apt-get source --download-only glslang failed"
  }

  local dsc orig want_sum got_sum
  dsc=$(find "$dir/dl" -maxdepth 1 -name 'glslang_*.dsc' | head -n 1)
  [[ -n $dsc ]] || die "no glslang .dsc downloaded"
  # Checksums-Sha256 entries: " <sha256> <size> <file>"
  read -r want_sum orig < <(awk '
      /^Checksums-Sha256:/ { s = 1; next }
      /^[^ ]/ { s = 0 }
      s && $3 ~ /\.orig\.tar\./ { print $1, $3; exit }' "$dsc")
  [[ -n ${orig:-} && -f $dir/dl/$orig ]] || die "orig tarball not found for $dsc"
  got_sum=$(sha256sum "$dir/dl/$orig" | cut -d' ' -f1)
  [[ $got_sum == "$want_sum" ]] || die "SHA-256 mismatch for $orig (dsc: $want_sum, got: $got_sum)"
  [[ $orig == "$SRC_ORIG" && $got_sum == "$SRC_ORIG_SHA256" ]] ||
    die "$SRC_SUITE now ships $orig (sha256 $got_sum), not the pinned $SRC_ORIG; update the pin in tools/glslc.sh deliberately"
  printf '%s %s %s\n' "$dir/dl/$orig" "$got_sum" "$uri"
}

build_glslang() {
  local work src_line tarball sum uri srcdir t0 t1 stage
  ensure_build_tools
  new_tmp
  work=$tmp
  src_line=$(fetch_glslang_source "$work/apt")
  read -r tarball sum uri <<<"$src_line"
  mkdir -p "$work/src"
  tar -xf "$tarball" -C "$work/src"
  srcdir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  [[ -f $srcdir/CMakeLists.txt ]] || die "unexpected layout in $tarball"

  log "building glslang $WANT_VERSION (takes a couple of minutes; log: $work/build.log)"
  t0=$(date +%s)
  if ! {
    cmake -S "$srcdir" -B "$work/build" \
      -DCMAKE_BUILD_TYPE=Release -DENABLE_OPT=OFF -DENABLE_HLSL=OFF \
      -DBUILD_TESTING=OFF -DGLSLANG_TESTS=OFF -DBUILD_SHARED_LIBS=OFF &&
      cmake --build "$work/build" --target glslang-standalone -j"$(nproc)"
  } >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    trap - EXIT # keep the log for inspection
    die "glslang build failed; full log: $work/build.log"
  fi
  t1=$(date +%s)
  local bin=$work/build/StandAlone/glslang
  is_wanted_glslang "$bin" || die "built glslang reports '$(glslang_version "$bin")', expected $WANT_VERSION"

  # Install atomically: stage next to the final dir, then rename.
  mkdir -p "$cache_root"
  stage=$(mktemp -d "$cache_root/.glslang-15.1.XXXXXX")
  chmod 755 "$stage"
  mkdir -p "$stage/bin"
  install -m 0755 "$bin" "$stage/bin/glslang"
  ln -s glslang "$stage/bin/glslangValidator"
  {
    echo "glslang $WANT_VERSION built by tools/glslc.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "source: $SRC_SUITE glslang source package from $uri"
    echo "orig tarball: $(basename "$tarball") sha256=$sum"
    echo "cmake: -DCMAKE_BUILD_TYPE=Release -DENABLE_OPT=OFF -DENABLE_HLSL=OFF -DBUILD_TESTING=OFF"
    echo "build time: $((t1 - t0))s"
  } >"$stage/PROVENANCE"
  rm -rf "$cache_dir"
  mv "$stage" "$cache_dir"
  log "glslang $WANT_VERSION built in $((t1 - t0))s -> $cache_dir/bin/glslang"
}

# Sets $glslang to a compiler reporting exactly $WANT_VERSION, building it if needed.
# (Not meant to run in a command substitution: the EXIT trap must see our temp dirs.)
find_compiler() {
  if [[ -n ${GLSLANG:-} ]]; then
    is_wanted_glslang "$GLSLANG" || die "GLSLANG=$GLSLANG does not report version $WANT_VERSION"
    glslang=$GLSLANG
    return
  fi
  local c p
  for c in glslang glslangValidator; do
    if p=$(command -v "$c") && is_wanted_glslang "$p"; then
      glslang=$p
      return
    fi
  done
  glslang=$cache_dir/bin/glslang
  is_wanted_glslang "$glslang" && return
  mkdir -p "$cache_root"
  # Serialise concurrent builds; re-check once we hold the lock.
  exec 9>"$cache_root/.glslang-15.1.lock"
  if command -v flock >/dev/null; then flock 9; fi
  if ! is_wanted_glslang "$glslang"; then
    build_glslang >&2
  fi
  exec 9>&-
}

# ---------------------------------------------------------------------------------------
# Compiling and validating.
# ---------------------------------------------------------------------------------------

# header_value FILE KEY -> value of "// KEY: value" in the first 10 lines, if any.
header_value() {
  head -n 10 "$1" |
    sed -n "s#^[[:space:]]*//[[:space:]]*$2:[[:space:]]*\\(.*[^[:space:]]\\)[[:space:]]*\$#\\1#p" |
    head -n 1
}

# True if the SPIR-V module declares OpCapability CooperativeMatrixKHR (6022). Reads the
# binary word stream directly, so it does not depend on spirv-dis knowing the name.
# Word 0x00020011 = OpCapability (opcode 17) with word count 2.
declares_coopmat_khr() {
  od -An -v -tx4 -w4 "$1" | awk '
    { w = $1 }
    prev == "00020011" && w == "00001786" { found = 1 }
    { prev = w }
    END { exit !found }'
}

# True if this spirv-tools release knows KHR cooperative matrix (then we validate anyway).
spirv_tools_know_coopmat() {
  spirv-dis --raw-id "$1" 2>/dev/null | grep -q 'OpCapability CooperativeMatrixKHR'
}

# compile_all OUTDIR: compiles every shader into OUTDIR and validates it.
# Returns non-zero if any shader failed; prints one line per shader.
compile_all() {
  local outdir=$1 glslang=$2 src name target out log_file rc=0 status
  local -a valflags extra
  new_tmp
  log_file=$tmp/log
  for src in "${sources[@]}"; do
    name=$(basename "$src" .comp)
    out=$outdir/$name.spv
    target=$(header_value "$src" glslc-target)
    target=${target:-$DEFAULT_TARGET}
    [[ $target =~ ^vulkan1\.[0-4]$ ]] || {
      echo "FAIL $src: unsupported glslc-target '$target' (want vulkan1.0 .. vulkan1.4)"
      rc=1
      continue
    }
    if ! "$glslang" --quiet --target-env "$target" -I"shaders" -o "$out" "$src" >"$log_file" 2>&1; then
      echo "FAIL $src: glslang error:"
      sed 's/^/     /' "$log_file"
      rm -f "$out"
      rc=1
      continue
    fi
    status="validated"
    if declares_coopmat_khr "$out" && ! spirv_tools_know_coopmat "$out"; then
      status="spirv-val SKIPPED (CooperativeMatrixKHR unknown to installed spirv-tools)"
    else
      valflags=()
      # Look at the preprocessed source so extensions enabled in included files count.
      if "$glslang" -E -I"shaders" "$src" 2>/dev/null |
        grep -q '^[[:space:]]*#[[:space:]]*extension[[:space:]]\{1,\}GL_EXT_scalar_block_layout'; then
        valflags+=(--scalar-block-layout)
      fi
      read -r -a extra <<<"$(header_value "$src" glslc-spirv-val)"
      valflags+=("${extra[@]+"${extra[@]}"}")
      if ! spirv-val --target-env "$target" "${valflags[@]+"${valflags[@]}"}" "$out" >"$log_file" 2>&1; then
        echo "FAIL $src: spirv-val --target-env $target${valflags[*]+ "${valflags[*]}"} failed:"
        sed 's/^/     /' "$log_file"
        rm -f "$out"
        rc=1
        continue
      fi
    fi
    printf 'ok   %-32s %s, %6d bytes, %s\n' "$src" "$target" "$(wc -c <"$out")" "$status"
  done
  return "$rc"
}

usage() { sed -n '2,9s/^# \{0,1\}//p' "$0"; }

mode=compile
case ${1:-} in
  "") ;;
  --check) mode=check ;;
  --compiler) mode=compiler ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac
[[ $# -le 1 ]] || { usage >&2; exit 2; }

if [[ $mode == compiler ]]; then
  find_compiler
  printf '%s\n' "$glslang"
  exit 0
fi

sources=()
if [[ -d shaders ]]; then
  while IFS= read -r -d '' f; do sources+=("$f"); done < <(
    find shaders -maxdepth 1 -type f -name '*.comp' -print0 | LC_ALL=C sort -z)
fi
committed=()
if [[ -d shaders/spv ]]; then
  while IFS= read -r -d '' f; do committed+=("$f"); done < <(
    find shaders/spv -maxdepth 1 -type f -name '*.spv' -print0 | LC_ALL=C sort -z)
fi

glslang=
if ((${#sources[@]})); then
  { command -v spirv-val && command -v spirv-dis; } >/dev/null ||
    die "spirv-val/spirv-dis not found; run: sudo apt-get install -y spirv-tools (or tools/deps.sh --shaders)"
  find_compiler
  echo "glslang $WANT_VERSION: $glslang"
else
  echo "no shaders/*.comp found"
fi

new_tmp
outdir=$tmp
failed=0
if ((${#sources[@]})); then
  compile_all "$outdir" "$glslang" || failed=1
fi

if [[ $mode == check ]]; then
  ((failed == 0)) || die "compilation failed; cannot check shaders/spv/"
  bad=0
  for src in "${sources[@]+"${sources[@]}"}"; do
    name=$(basename "$src" .comp)
    if [[ ! -f shaders/spv/$name.spv ]]; then
      echo "MISSING shaders/spv/$name.spv (from $src)"; bad=1
    elif ! cmp -s "$outdir/$name.spv" "shaders/spv/$name.spv"; then
      echo "DIFFERS shaders/spv/$name.spv (out of date vs $src)"; bad=1
    fi
  done
  for spv in "${committed[@]+"${committed[@]}"}"; do
    name=$(basename "$spv" .spv)
    if [[ ! -f shaders/$name.comp ]]; then
      echo "STALE   $spv (no shaders/$name.comp)"; bad=1
    fi
  done
  if ((bad)); then
    echo "shaders/spv is out of date; run tools/glslc.sh" >&2
    exit 1
  fi
  echo "shaders/spv is up to date (${#sources[@]} kernels)"
  exit 0
fi

((failed == 0)) || die "some shaders failed; shaders/spv/ left unchanged"
if ((${#sources[@]})); then
  mkdir -p shaders/spv
  for src in "${sources[@]}"; do
    name=$(basename "$src" .comp)
    if ! cmp -s "$outdir/$name.spv" "shaders/spv/$name.spv" 2>/dev/null; then
      cp "$outdir/$name.spv" "shaders/spv/$name.spv"
      echo "wrote shaders/spv/$name.spv"
    fi
  done
fi
for spv in "${committed[@]+"${committed[@]}"}"; do
  name=$(basename "$spv" .spv)
  if [[ ! -f shaders/$name.comp ]]; then
    rm -f -- "$spv"
    echo "removed stale $spv"
  fi
done

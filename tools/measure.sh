#!/usr/bin/env bash
# The measurement set behind docs/BENCHMARKS.md, on the default Vulkan device,
# in one command: every step's output goes to a log (and JSON/plots) under the
# output folder, each step under its own time limit, and a failing step does
# not stop the others.
#
#   tools/measure.sh [--out DIR] [STEP...]      run the steps (default: all)
#   tools/measure.sh --build DIR                build deft and the benchmark
#       test binaries into DIR with this script and the shared workloads, for
#       a GPU machine without a Go toolchain: there, run DIR/measure.sh
#
# Steps: devices probe conformance attention single generate quant matmuls
# gemm. $MEASURE_TIMEOUT (seconds, default 600) limits each command; extra
# flags for the conformance and bench commands go in $MEASURE_FLAGS (e.g.
# "--variant partial_attn=scalar").
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
all_steps=(devices probe conformance attention single generate quant matmuls gemm)

if [[ ${1:-} == --build ]]; then
  dir=${2:?usage: tools/measure.sh --build DIR}
  root=$(cd "$here/.." && pwd)
  mkdir -p "$dir"
  (cd "$root" && go build -o "$dir/deft" ./cmd/deft &&
    go test -c -o "$dir/model.test" ./model &&
    go test -c -o "$dir/treeattn.test" ./treeattn) || exit 1
  cp "$here/measure.sh" "$dir/measure.sh"
  if [[ -d $root/../shared/workloads ]]; then
    rm -rf "$dir/workloads" && cp -r "$root/../shared/workloads" "$dir/workloads"
  fi
  echo "built into $dir: run $dir/measure.sh [--out DIR] [STEP...] on the GPU machine"
  exit 0
fi

out=measure-out/$(date -u +%Y%m%dT%H%M%SZ)
if [[ ${1:-} == --out ]]; then
  out=${2:?usage: tools/measure.sh --out DIR [STEP...]}
  shift 2
fi
steps=("$@")
((${#steps[@]})) || steps=("${all_steps[@]}")
for s in "${steps[@]}"; do
  [[ " ${all_steps[*]} " == *" $s "* ]] || { echo "measure.sh: unknown step $s (have: ${all_steps[*]})" >&2; exit 2; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Prebuilt binaries beside this script (--build), else build them now.
bin=$here
if [[ ! -x $bin/deft ]]; then
  bin=$(mktemp -d)
  (cd "$here/.." && go build -o "$bin/deft" ./cmd/deft && go test -c -o "$bin/model.test" ./model &&
    go test -c -o "$bin/treeattn.test" ./treeattn) || exit 1
fi
if [[ -z ${DEFT_WORKLOADS:-} && -d $here/workloads ]]; then
  export DEFT_WORKLOADS=$here/workloads
fi
limit=${MEASURE_TIMEOUT:-600}
read -r -a flags <<<"${MEASURE_FLAGS:-}"
deft() { timeout "$limit" "$bin/deft" "$@"; }
# conformance and bench commands, with $MEASURE_FLAGS
deftx() { timeout "$limit" "$bin/deft" "$@" "${flags[@]}"; }
model_test() { (cd "$out" && timeout "$limit" "$bin/model.test" -test.run '^$' -test.benchtime 1x "$@"); }

# One query over 4001 tokens: a decoding step's attention for one sequence.
single_tree=$out/single4001.json
echo '{"nodes":[{"parent":-1,"tokens":4001}],"queries":[{"node":0,"offset":4000}]}' >"$single_tree"

run_step() {
  case $1 in
  devices) deft devices ;;
  probe) deft probe ;;
  conformance) deftx conformance ;;
  attention) deftx bench --quiet --tree all --variant all --method flatten --runs 10 --json "$out/attention.json" --plot "$out/attention.png" ;;
  single) deftx bench --quiet --tree "$single_tree" --variant all --runs 20 --json "$out/single.json" ;;
  generate) deftx bench generate --quiet --type f16 --runs 5 --attn-runs 2 --profile 2 --json "$out/generate-f16.json" --plot "$out/generate-f16.png" ;;
  quant)
    for t in q8_0 q4_k_m; do
      deftx bench generate --quiet --type $t --scenario single,fewshot --method flatten --runs 5 --attn-runs 2 --profile 2 --warm-up 4s --json "$out/generate-$t.json"
    done
    ;;
  matmuls) model_test -test.bench 'DecodeMatmuls' ;;
  gemm) model_test -test.bench 'GemmInputs$' ;;
  esac
}

status=0
for s in "${steps[@]}"; do
  printf '=== %s (%s)\n' "$s" "$(date -u +%H:%M:%S)" | tee -a "$out/summary.txt"
  run_step "$s" >"$out/$s.log" 2>&1
  rc=$?
  tail -n 40 "$out/$s.log"
  echo "--- $s: exit $rc" | tee -a "$out/summary.txt"
  ((rc == 0)) || status=1
done
echo "measure.sh: logs and reports in $out"
exit $status

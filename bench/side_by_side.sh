#!/bin/bash
# Two jobs of one sparsity series started side by side on one machine, as from two terminals
# (embedded: no broker): ResNet-20 at 90% and, DELAY seconds later, at 98%, with the recipe the
# machine picks. The 98% job's first step is the 90% job's whole prune, so it waits for it
# ("waiting for job 1") and trains only its own two steps. Writes both jobs' `farm show --format
# json` and the seconds each took to OUTDIR. MODEL and ARGS change the job (a dry run on a CPU:
# MODEL=tiny ARGS="--dataset synthetic --recipe quick --subset 1024 --retrain-epochs 8").
#     bash bench/gpu/run.sh "bash bench/side_by_side.sh \$OUT/sbs"
set -euo pipefail
out=${1:-/tmp/sbs}
mkdir -p "$out"
export FARM_HOME=${FARM_HOME:-/tmp/farm-home}/side-by-side COLUMNS=100
farm() { python3 -c "import sys; sys.argv[0] = 'farm'; from farm.cli import main; main()" "$@"; }
timed() {  # name, then the farm arguments: the output and the wall seconds under $out
  local t0=$SECONDS
  farm "${@:2}" > "$out/$1.txt" 2> "$out/$1.err"
  echo "$1 $((SECONDS - t0)) s" | tee -a "$out/seconds.txt"
}
timed j90 submit "${MODEL:-resnet}" ${ARGS:-} --sparsity 0.9 &
sleep "${DELAY:-30}"
timed j98 submit "${MODEL:-resnet}" ${ARGS:-} --sparsity 0.98
wait
farm show 1 --format json > "$out/show1.json"
farm show 2 --format json > "$out/show2.json"
farm show 2 | sed -n '/^stages/,/^metrics/p'

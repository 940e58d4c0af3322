#!/bin/bash
# On the GPU machine: the environment, then each argument as a command, each with the time it
# may take before the call's 10 minutes run out. Outputs belong under $OUT.
#     bash bench/gpu/run.sh "python3 -m pytest -q tests/kernels/test_gpu.py" "python3 bench/gen_probe.py --out \$OUT/g.json ..."
source .gpu/env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
start=$(date +%s)
i=0
for cmd in "$@"; do
  left=$((580 - $(date +%s) + start))
  if [ "$left" -lt 20 ]; then echo "skipped (no time left): $cmd"; continue; fi
  i=$((i + 1))
  echo "== $cmd (at most ${left} s)"
  # the whole output stays in $OUT (the tool returns only the last 12,000 characters)
  timeout "$left" bash -c "$cmd" 2>&1 | tee "${OUT:-/tmp}/run-$i.log" | grep -v '^$' | tail -200
  echo "== exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
done

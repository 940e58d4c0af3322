# ncu of csrgen pixel-vector kernels against the usual picks (docs/BENCHMARKS.md session 19): bash bench/gpu/run.sh "bash bench/gpu/ncu_px.sh"
S="--section WarpStateStats --section SchedulerStats --section LaunchStats --section Occupancy --section InstructionStats"
for spec in "r50.l3.1x1up gn-k64-t128-s1-g2" "r50.l3.1x1up gn-k16-t128-s1-g2-p4" "r50.l3.1x1up gn-k32-t128-s1-g2-p2" "r50.l1.1x1down gn-k32-t128-s2-g2-st" "r50.l1.1x1down gn-k32-t128-s1-g2-p2"; do
  set -- $spec
  ncu -k regex:csrgen --launch-skip 3 --launch-count 1 $S python3 bench/profile_layer.py $1 --batch 32 --variant fp16 --config $2 --run > $OUT/ncu-csrgen-$1-$2-fp16-b32.txt 2>&1
  echo "$1 $2 rc=$?"; grep -E "Duration|No Instruction|Stall|Issued Warp|Registers Per|Achieved Occupancy|Warp Cycles Per Issued" $OUT/ncu-csrgen-$1-$2-fp16-b32.txt | head -20
done

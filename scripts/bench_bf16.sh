#!/usr/bin/env bash
# bf16 mixed precision on AMX tiles against PyTorch's, interleaved in one run on one machine:
# kdscope in f32 and with KDSCOPE_PRECISION=bf16, tuned PyTorch (channels_last + malloc tunables) in
# f32 (the anchor script) and inside torch.autocast("cpu", dtype=torch.bfloat16)
# (benches/torch_autocast.py); ResNet-20 and ResNet-56 training and inference.
#
#   scripts/bench_bf16.sh                    # 2 rounds, batches 128 and 32 (inference at twice each)
#   ROUNDS=1 BATCHES=128 scripts/bench_bf16.sh
#
# Needs a CPU with AMX-BF16 (kdscope refuses KDSCOPE_PRECISION=bf16 elsewhere), a release build and
# the anchor's venv (python3 -m venv .venv-anchors && .venv-anchors/bin/pip install torch numpy).
# Prints the CPU, every RESULT line, then per round the medians (images/s) and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
BATCHES=${BATCHES:-128 32}
PY=${PY:-.venv-anchors/bin/python}
ANCHOR=${ANCHOR:-../shared/anchors/pytorch_cifar_bench.py}
KDS=${KDS:-target/release/kdscope}
TUNED="glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
lscpu | grep -E '^Model name|^CPU family|^Model:' | sed 's/  */ /g'
echo "SIMD flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512f|avx512_bf16|amx_tile|amx_bf16)$' | tr '\n' ' ')"
date -u
for r in $(seq "$ROUNDS"); do
  echo "ROUND $r" | tee -a "$LOG"
  for b in $BATCHES; do
    for p in fp32 bf16; do
      KDSCOPE_PRECISION=$p "$KDS" bench --archs resnet20,resnet56 --batch "$b" --iters 5 --reps 3 |
        sed -n -e "s/^RESULT /RESULT kds_${p}_/p" -e "/^FMA peak/p" | tee -a "$LOG"
    done
    for a in r20 r56; do
      for mode in train infer; do
        n=$b
        [ "$mode" = infer ] && n=$((2 * b))
        CL=1 GLIBC_TUNABLES=$TUNED "$PY" "$ANCHOR" "$mode" "$a" "$n" 5 | grep RESULT | tee -a "$LOG"
        CL=1 GLIBC_TUNABLES=$TUNED "$PY" benches/torch_autocast.py "$mode" "$a" "$n" 5 | grep RESULT | tee -a "$LOG"
      done
    done
  done
done
python3 - "$LOG" <<'PY'
import re, sys
sys.path.insert(0, "scripts")
from bench_rounds import ARCH as arch, contended, median, tables
for res in tables(sys.argv[1], f"{'workload':<22} {'kds f32':>8} {'kds bf16':>8} {'torch f32':>9} {'torch bf16':>10} {'bf16/f32':>8} {'kds/torch bf16':>14}"):
    for name in res:
        m = re.fullmatch(r"kds_fp32_(resnet\d+)_(train|infer)_b(\d+)", name)
        if not m:
            continue
        a, mode, b = m.groups()
        f, h = median(res, name), median(res, f"kds_bf16_{a}_{mode}_b{b}")
        tf, tb = median(res, f"torch_{mode}_{arch[a]}_b{b}_cl"), median(res, f"torch_bf16_{mode}_{arch[a]}_b{b}_cl")
        print(f"{a}_{mode}_b{b:<8} {f:>8.1f} {h:>8.1f} {tf:>9.1f} {tb:>10.1f} {h/f:>7.2f}x {h/tb:>13.2f}x{contended(res, name) or contended(res, f'kds_bf16_{a}_{mode}_b{b}')}")
PY

#!/usr/bin/env bash
# Training, inference and KD-step throughput of kdscope against PyTorch's default and "tuned"
# (channels_last + malloc tunables) CPU paths, interleaved in one run on one machine, so that the
# ratios hold even when the shared machine's speed drifts between minutes: per model (and for the
# KD step) kdscope's runs and the anchor's follow each other.
#
#   scripts/bench_vs_pytorch.sh            # 2 rounds, batches 128 and 32, ResNet-20/56 and KD 56 -> 20
#   ROUNDS=1 BATCHES=32 scripts/bench_vs_pytorch.sh
#   SIMD=avx2 scripts/bench_vs_pytorch.sh  # both held to AVX2 + FMA on an AVX-512 machine
#
# SIMD=avx2 runs kdscope with KDSCOPE_SIMD=avx2 and PyTorch with ATEN_CPU_CAPABILITY=avx2 and
# ONEDNN_MAX_CPU_ISA=AVX2: the instruction set of the pool's AMD Zen 3 machines, on this CPU's cores
# and caches (a proxy for Zen 3, not a measurement of it; kdscope's gemm-crate products keep AVX-512).
#
# Needs a release build (cargo build --release) and the anchor's venv:
#   python3 -m venv .venv-anchors && .venv-anchors/bin/pip install torch numpy
# Prints the CPU (lscpu model name and SIMD flags), every RESULT line, then per round a table of
# medians (images/s) with kdscope / PyTorch ratios. BENCHMARKS.md quotes these tables. A row whose
# `kdscope bench` run began with an FMA-peak reading below 0.8 of the log's highest is flagged
# "contended, rerun" (another tenant on the host had taken about a core; see scripts/bench_rounds.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
BATCHES=${BATCHES:-128 32}
PY=${PY:-.venv-anchors/bin/python}
ANCHOR=${ANCHOR:-../shared/anchors/pytorch_cifar_bench.py}
KDS=${KDS:-target/release/kdscope}
TUNED="glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295"
if [ -n "${SIMD:-}" ]; then
  [ "$SIMD" = avx2 ] || { echo "SIMD=$SIMD: only SIMD=avx2 is supported" >&2; exit 2; }
  export KDSCOPE_SIMD=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
  echo "held to AVX2 + FMA: KDSCOPE_SIMD=$KDSCOPE_SIMD ATEN_CPU_CAPABILITY=$ATEN_CPU_CAPABILITY ONEDNN_MAX_CPU_ISA=$ONEDNN_MAX_CPU_ISA"
fi
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
lscpu | grep -E '^Model name|^CPU family|^Model:' | sed 's/  */ /g'
echo "SIMD flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_vnni|avx512_bf16|amx_tile|amx_bf16)$' | tr '\n' ' ')"
date -u
# The anchor's commands for one workload group (a model's training and inference, or the KD step),
# PyTorch's default path, then its tuned one.
torch_runs() {
  local cl
  for cl in 0 1; do
    if [ "$cl" = 1 ]; then export CL=1 GLIBC_TUNABLES=$TUNED; else unset CL GLIBC_TUNABLES; fi
    case "$1" in
      r20) "$PY" "$ANCHOR" train r20 "$2" 5; "$PY" "$ANCHOR" infer r20 $((2 * $2)) 5 ;;
      r56) "$PY" "$ANCHOR" train r56 "$2" 3; "$PY" "$ANCHOR" infer r56 $((2 * $2)) 5 ;;
      kd) "$PY" "$ANCHOR" kd r20 r56 "$2" 3 ;;
    esac
  done | tee -a "$LOG"
  unset CL GLIBC_TUNABLES
}
kds_runs() {
  case "$1" in
    r20) "$KDS" bench --archs resnet20 --batch "$2" --iters 5 --reps 3 ;;
    r56) "$KDS" bench --archs resnet56 --batch "$2" --iters 5 --reps 3 ;;
    kd) "$KDS" bench --archs "" --kd resnet56:resnet20 --batch "$2" --iters 5 --reps 3 ;;
  esac | tee -a "$LOG"
}
# kdscope and PyTorch alternate group by group (a minute or two each), kdscope first in odd rounds
# and PyTorch first in even ones, so that the host's drift over minutes falls on both sides.
for r in $(seq "$ROUNDS"); do
  echo "ROUND $r" | tee -a "$LOG"
  for b in $BATCHES; do
    for w in r20 r56 kd; do
      if [ $((r % 2)) = 1 ]; then kds_runs "$w" "$b"; torch_runs "$w" "$b"; else torch_runs "$w" "$b"; kds_runs "$w" "$b"; fi
    done
  done
done
python3 - "$LOG" <<'PY'
import re, sys
sys.path.insert(0, "scripts")
from bench_rounds import ARCH as arch, contended, median, tables
for res in tables(sys.argv[1], f"{'workload':<34} {'kdscope':>9} {'torch':>9} {'tuned':>9} {'/torch':>7} {'/tuned':>7}"):
    for name in res:
        m = re.fullmatch(r"(resnet\d+)_(train|infer|kd_from_(resnet\d+))_b(\d+)", name)
        if not m:
            continue
        a, mode, t, b = m.group(1), m.group(2), m.group(3), m.group(4)
        if t:
            ref = f"torch_kd_{arch[a]}_from_{arch[t]}_b{b}"
        else:
            ref = f"torch_{mode}_{arch[a]}_b{b}"
        k, d, tu = median(res, name), median(res, ref), median(res, ref + "_cl")
        print(f"{name:<34} {k:>9.1f} {d:>9.1f} {tu:>9.1f} {k/d:>6.2f}x {k/tu:>6.2f}x{contended(res, name)}")
PY

"""PyTorch's bf16 mixed precision on the CPU (`torch.autocast("cpu", dtype=torch.bfloat16)`, oneDNN's
AMX kernels where the CPU has them): the counterpart of `KDSCOPE_PRECISION=bf16 kdscope bench`
(BENCHMARKS.md, "bf16 inference on AMX tiles").

  CL=1 GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295 \
    .venv-anchors/bin/python benches/torch_autocast.py infer r20 256 5
  ... benches/torch_autocast.py train r20 128 5

Imports the model from ../shared/anchors/pytorch_cifar_bench.py (same definition, threads, memory
format: NT, CL, REPS) and times it as that script's `infer` / `train` commands do, inside autocast;
prints `RESULT torch_bf16_<mode>_<arch>_b<batch>[_cl] <sec/iter> <img/s>` per repetition.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "anchors"))
import pytorch_cifar_bench as anchor  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main():
    mode, name, bs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    iters = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    reps = int(os.environ.get("REPS", "3"))
    x = anchor.inp(bs)
    if mode == "infer":
        m = anchor.make(name).eval()

        def step():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                m(x)

    elif mode == "train":
        m = anchor.make(name).train()
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        y = torch.randint(0, 100, (bs,))

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()

    else:
        sys.exit(f"usage: {sys.argv[0]} infer|train r20|r56 BATCH [ITERS]")
    for t in anchor.timeit(step, iters, reps, warm=3):
        print(f"RESULT torch_bf16_{mode}_{name}_b{bs}{anchor.TAG} {t:.5f} {bs / t:.1f}")


if __name__ == "__main__":
    main()

"""Where PyTorch's CPU training step spends its time: `torch.profiler` over the anchor's ResNet, the
counterpart of `kdscope bench --profile` (BENCHMARKS.md, "Where the time goes").

  CL=1 GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295 \
    .venv-anchors/bin/python benches/torch_profile.py r20 128 5

Imports the model from ../shared/anchors/pytorch_cifar_bench.py (same definition, threads and
memory format: NT, CL), warms up 3 steps, profiles `steps` more and prints the self CPU time of the
largest ops in ms per step, then the step's wall time.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "anchors"))
import pytorch_cifar_bench as anchor  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main():
    name, bs, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    m = anchor.make(name).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = anchor.inp(bs)
    y = torch.randint(0, 100, (bs,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) / steps
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows)
    print(f"{name} b{bs} CL={int(anchor.CL)} threads={torch.get_num_threads()}: self CPU ms per step")
    for e in rows[:14]:
        ms = e.self_cpu_time_total / 1e3 / steps
        print(f"  {e.key:<44} {ms:8.2f} ms  {100 * e.self_cpu_time_total / total:5.1f} %")
    print(f"  step wall time (profiled) {wall * 1e3:.1f} ms, {bs / wall:.1f} img/s")


if __name__ == "__main__":
    main()

"""PyTorch CPU throughput of the architectures added for PyTorch interop, to set next to kdscope's on the
same machine in the same session (BENCHMARKS.md, "Architectures from PyTorch"):

- resnetv2_18: mdistiller's CIFAR ResNet-18 (tests/fixtures/make_interop_reference.py), 32 px, training
  batch 128, inference batch 256 (`kdscope bench --archs resnetv2_18`);
- tv_resnet50: torchvision.models.resnet50, 224 px, batch 32 for training and inference
  (`kdscope bench --archs tv_resnet50 --size 224 --batch 32 --infer-batch 32`).

    .venv-anchors/bin/pip install torchvision safetensors   # once, beside the anchor's torch and numpy
    .venv-anchors/bin/python benches/interop_pytorch.py [resnetv2_18|tv_resnet50 ...]

100 classes, SGD with momentum, 2 threads. Environment as the anchor (../shared/anchors/pytorch_cifar_bench.py):
REPS (default 3), ITERS (default 3), CL=1 for channels_last; the anchor's "tuned" variant is CL=1 with
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967295.
Prints one line per repetition:  RESULT pytorch_<model>_<train|infer>_b<batch>[_<px>px] <sec/iter> <img/s>
"""
import os
import sys
import time

import torch
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "anchors"))
from make_interop_reference import V2, ResNetV2  # noqa: E402

CONFIGS = {
    "resnetv2_18": (lambda: ResNetV2(*V2["resnetv2_18"], 100), 32, 128, 256),
    "tv_resnet50": (lambda: torchvision.models.resnet50(num_classes=100), 224, 32, 32),
}


def timed(step, iters, reps):
    step()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(iters):
            step()
        out.append((time.perf_counter() - t) / iters)
    return out


def main(names):
    torch.set_num_threads(int(os.environ.get("NT", "2")))
    reps, iters = int(os.environ.get("REPS", "3")), int(os.environ.get("ITERS", "3"))
    fmt = torch.channels_last if os.environ.get("CL") == "1" else torch.contiguous_format
    for name in names:
        make, px, batch, infer_batch = CONFIGS[name]
        model = make().to(memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        x = torch.randn(batch, 3, px, px).to(memory_format=fmt)
        y = torch.arange(batch) % 100

        def train_step():
            model.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        xi = torch.randn(infer_batch, 3, px, px).to(memory_format=fmt)

        def infer_step():
            model.eval()
            with torch.no_grad():
                model(xi)

        suffix = "" if px == 32 else f"_{px}px"
        for mode, step, b in [("train", train_step, batch), ("infer", infer_step, infer_batch)]:
            for s in timed(step, iters, reps):
                print(f"RESULT pytorch_{name}_{mode}_b{b}{suffix} {s:.4f} {b / s:.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(CONFIGS))

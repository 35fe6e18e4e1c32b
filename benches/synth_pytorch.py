"""Trains the PyTorch RepDistiller CIFAR ResNet (the anchor's definition) on an export of kdscope's
built-in dataset with kdscope's recipe, to check that what kdscope's models learn on it (e.g. ResNet-8
against ResNet-56, BENCHMARKS.md "Built-in dataset: depth") is not an artefact of kdscope's own ops.

  cargo run --release -- export --out /tmp/fractals20            # train.bin / test.bin, CIFAR-100 layout
  .venv-anchors/bin/python benches/synth_pytorch.py /tmp/fractals20 8 12 32 0.05
  .venv-anchors/bin/python benches/synth_pytorch.py /tmp/fractals20 56 12 32 0.05

Arguments: export dir, depth (6n+2), epochs, batch size, learning rate. Recipe as `kdscope train`:
SGD momentum 0.9, weight decay 5e-4, cosine annealing stepped per epoch, random crop (4-px zero
padding after normalisation) and horizontal flip, CIFAR-100 normalisation, last incomplete batch
dropped. Prints one line per epoch. Environment: NT threads (default 2), SEED (default 0).
"""
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "anchors"))
import pytorch_cifar_bench as anchor  # noqa: E402  (sets the thread count from NT)

d, depth, epochs, bs, lr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
seed = int(os.environ.get("SEED", "0"))
torch.manual_seed(seed)
rng = np.random.default_rng(seed)


def load(path):
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3074)
    return raw[:, 2:].reshape(-1, 3, 32, 32), raw[:, 1].astype(np.int64)


mean = np.array([0.5071, 0.4865, 0.4409], np.float32)[:, None, None]
std = np.array([0.2673, 0.2564, 0.2762], np.float32)[:, None, None]
(xtr, ytr), (xte, yte) = load(f"{d}/train.bin"), load(f"{d}/test.bin")
xtr = (xtr.astype(np.float32) / 255 - mean) / std
xte = torch.from_numpy((xte.astype(np.float32) / 255 - mean) / std)
model = anchor.ResNet(depth, num_classes=int(ytr.max()) + 1)
opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
padded = np.pad(xtr, ((0, 0), (0, 0), (4, 4), (4, 4)))
for ep in range(epochs):
    model.train()
    t0, perm, correct = time.time(), rng.permutation(len(ytr)), 0
    steps = len(ytr) // bs
    for b in range(steps):
        idx = perm[b * bs:(b + 1) * bs]
        ox, oy = rng.integers(0, 9, len(idx)), rng.integers(0, 9, len(idx))
        x = np.stack([padded[i, :, y:y + 32, xo:xo + 32] for i, y, xo in zip(idx, oy, ox)])
        flip = rng.random(len(idx)) < 0.5
        x[flip] = x[flip][..., ::-1]
        x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(ytr[idx])
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        correct += (out.argmax(1) == y).sum().item()
    sched.step()
    model.eval()
    with torch.no_grad():
        hits = sum((model(xte[i:i + 500]).argmax(1) == torch.from_numpy(yte[i:i + 500])).sum().item()
                   for i in range(0, len(yte), 500))
    print(f"resnet{depth} epoch {ep + 1}/{epochs} train acc {100 * correct / (steps * bs):.2f}% "
          f"test acc {100 * hits / len(yte):.2f}% {time.time() - t0:.1f}s", flush=True)

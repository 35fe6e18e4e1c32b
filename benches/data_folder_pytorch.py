"""torchvision's ImageFolder + DataLoader on a folder of JPEGs, next to `kdscope bench-data` on the same
files (BENCHMARKS.md, "Image folders: decoding and augmenting 224 px JPEGs").

    .venv-anchors/bin/python benches/data_folder_pytorch.py make DIR [N]   # N PetImages-like JPEGs (default 2000)
    .venv-anchors/bin/python benches/data_folder_pytorch.py run DIR [SIZE] [BATCH] [WORKERS]
    kdscope bench-data --data-dir DIR --size 224 --batch 64

`make` writes DIR/Cat and DIR/Dog, N images of 500x375 (or 375x500 for every third), JPEG quality 90,
with smooth shapes and noise, so sizes and decode cost are those of photos (~60-90 KB each).
`run` times one epoch of RandomResizedCrop(SIZE) + RandomHorizontalFlip + ToTensor + Normalize
through DataLoader(batch, num_workers=WORKERS (default 2), shuffle), and prints the peak memory of the
process and of its workers (ru_maxrss). torch's own threads: 2.
Prints:  RESULT torchvision_epoch_w<workers>_b<batch> <seconds> <img/s>
"""
import os
import resource
import sys
import time

import numpy as np


def make(root, n):
    from PIL import Image
    rng = np.random.default_rng(0)
    for k in range(n):
        cls = ("Cat", "Dog")[k % 2]
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        w, h = (375, 500) if k % 3 == 0 else (500, 375)
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            fx, fy, ph = rng.uniform(0.005, 0.05, 2).tolist() + [rng.uniform(0, 6.3)]
            img[..., c] = 128 + 90 * np.sin(fx * x + ph) * np.cos(fy * y)
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(30, 150)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 12, img.shape)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(root, cls, f"{k}.jpg"), quality=90)


def run(root, size, batch, workers):
    import torch
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder
    torch.set_num_threads(2)
    tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    ds = ImageFolder(root, transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)
    t = time.perf_counter()
    total = 0.0
    for x, _ in dl:
        total += float(x[0, 0, 0, 0])
    sec = time.perf_counter() - t
    print(f"{len(ds)} images, checksum {total:.3f}")
    print(f"RESULT torchvision_epoch_w{workers}_b{batch} {sec:.3f} {len(ds) / sec:.1f}")
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory {me:.0f} MiB (main process), {kids:.0f} MiB (largest worker)")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2000)
    else:
        args = [int(a) for a in sys.argv[3:]] + [224, 64, 2][len(sys.argv) - 3:]
        run(sys.argv[2], *args[:3])

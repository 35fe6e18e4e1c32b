"""pytorch-grad-cam reference timing for `kdscope bench-explain` (same model definition, same 2 cores).

Grad-CAM of N images of a CIFAR ResNet (RepDistiller definition from ../shared/anchors), eval mode, target
layer = the last block of layer3 (kdscope's `layer3` tap), target = a given class per image, maps resized to
32x32 by pytorch-grad-cam itself. Random weights and inputs: the timing does not depend on them.

Set-up (once): .venv-anchors/bin/pip install grad-cam==1.5.4
Run:           .venv-anchors/bin/python benches/gradcam_pytorch.py r56 1000 100 3
Prints one line per repetition:  RESULT gradcam_torch_<model>_n<N>_b<B> <seconds> s <img/s> img/s
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "anchors"))
import pytorch_cifar_bench as anchor  # noqa: E402  (sets torch threads from NT, default 2)
import torch  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


def main():
    name, n, bs, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    model = anchor.make(name).eval()
    x = torch.randn(n, 3, 32, 32)
    targets = [ClassifierOutputTarget(i % 20) for i in range(n)]
    with GradCAM(model=model, target_layers=[model.layer3[-1]]) as cam:
        for _ in range(reps):
            t = time.perf_counter()
            for s in range(0, n, bs):
                cam(input_tensor=x[s:s + bs], targets=targets[s:s + bs])
            dt = time.perf_counter() - t
            print(f"RESULT gradcam_torch_{name}_n{n}_b{bs} {dt:.3f} s {n / dt:.1f} img/s", flush=True)


if __name__ == "__main__":
    main()

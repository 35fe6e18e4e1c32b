"""PyTorch CPU training throughput of MobileNetV2 (mobile_half), ShuffleV1 and ShuffleV2 at batch 64 on 2
threads, with the module definitions of tests/fixtures/make_zoo_reference.py (mdistiller's architectures),
to compare with `kdscope bench --archs shufflev1,shufflev2,mobilenetv2 --batch 64` (BENCHMARKS.md).

    .venv-anchors/bin/python benches/zoo_pytorch.py
"""
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
src = open(os.path.join(HERE, "..", "tests", "fixtures", "make_zoo_reference.py")).read()
exec(src.split("def wrn_28_10")[0])  # the module definitions only
torch.set_num_threads(2)
for name, ctor in [("shufflev1", ShuffleV1), ("shufflev2", ShuffleV2), ("mobilenetv2", MobileHalf)]:
    m = ctor(100)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 100, (64,))
    m.train()
    for i in range(8):
        if i == 3:
            t = time.time()
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    dt = (time.time() - t) / 5
    print(f"RESULT pytorch_{name}_train_b64 {dt:.4f} {64 / dt:.1f}")

"""Training throughput of candidate timm models on 28x28 grayscale input (CPU).

    python examples/model_speed.py resnet18 regnetx_002 lcnet_050

Random data, batch 128, SGD; prints training images/s and the implied seconds
for a 10,000-image epoch. Run it alone: another busy process distorts it.
"""

import sys
import time

import timm
import torch
import torch.nn as nn

torch.set_num_threads(2)
x = torch.randn(128, 1, 28, 28)
y = torch.randint(0, 10, (128,))
names = sys.argv[1:] or ["regnetx_002", "lcnet_050", "resnet10t", "resnet18"]
for name in names:
    m = timm.create_model(name, num_classes=10, in_chans=1)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    m.train()
    for i in range(6):
        if i == 2:
            t = time.perf_counter()
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = (time.perf_counter() - t) / 4
    npar = sum(p.numel() for p in m.parameters())
    print(f"{name}: {128 / dt:.0f} img/s train, params {npar / 1e6:.2f}M, "
          f"epoch of 10k {10000 / (128 / dt):.1f}s")

"""Training and eval-pass throughput of candidate models on random images (CPU).

    python studies/model_speed.py regnetx_002 resnet10t cnn:32,64,128 --shape 3 32 32

Any name :func:`labelclean.models.create_model` takes. Random uint8 images,
batch 128 for training (SGD) and 1,024 for the eval pass; prints images/s
for both and the implied seconds for one epoch of 10,000 images with its
eval pass. Run it alone: another busy process distorts it.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from labelclean.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("models", nargs="*", default=["regnetx_002", "resnet10t", "cnn:32,64,128"])
    ap.add_argument("--shape", type=int, nargs=3, default=[1, 28, 28], metavar=("C", "H", "W"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    c = args.shape[0]
    x = torch.randint(0, 256, (128, *args.shape), dtype=torch.uint8)
    y = torch.randint(0, 10, (128,))
    x_eval = torch.randint(0, 256, (1024, *args.shape), dtype=torch.uint8)
    for name in args.models:
        m = create_model(name, tuple(args.shape), 10, torch.full((c, 1, 1), 128.0),
                         torch.full((c, 1, 1), 64.0))
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        m.train()
        for i in range(6):
            if i == 2:
                t = time.perf_counter()
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train = 4 * 128 / (time.perf_counter() - t)
        m.eval()
        with torch.inference_mode():
            m(x_eval[:128])
            t = time.perf_counter()
            m(x_eval)
            ev = 1024 / (time.perf_counter() - t)
        npar = sum(p.numel() for p in m.parameters())
        print(f"{name}: {train:.0f} img/s train, {ev:.0f} img/s eval, params {npar / 1e6:.2f}M, "
              f"epoch of 10k with its eval pass {10000 / train + 10000 / ev:.1f}s", flush=True)


if __name__ == "__main__":
    main()

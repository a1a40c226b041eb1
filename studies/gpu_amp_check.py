"""Does training learn, and how fast, under each CUDA precision/layout setting?

For fp32 / bf16 autocast, NCHW / channels_last: one epoch of labelclean's
Trainer and of a plain loop (data resident on the device, same model, SGD lr
0.1, batch 128) on ``--n`` MNIST images; prints the mean training loss of the
epoch (ln 10 = 2.303 means nothing was learned), test accuracy, and seconds
per epoch (second epoch, after a warm-up one). Then the observation costs of
one epoch (eval-mode loss pass, mixture fit, order-parameter probe).

    python studies/gpu_amp_check.py --mnist ../shared/datasets/mnist.npz --n 60000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from labelclean.mixture import fit_loss_mixture
from labelclean.models import create_model, input_statistics
from labelclean.order_parameters import probe_order_parameters
from labelclean.training import TrainConfig, Trainer, resolve_device


def plain_epoch(model, x, y, mean, std, amp, cl, device) -> tuple[float, float]:
    start = time.perf_counter()
    model.train()
    total = torch.zeros((), device=device)
    for idx in torch.randperm(len(y), device=device).split(128):
        xb = (x[idx].float() - mean) / std
        if cl:
            xb = xb.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(model(xb), y[idx])
        model.zero_grad(set_to_none=True)
        loss.backward()
        opt = model._opt
        opt.step()
        total += loss.detach().float() * len(idx)
    return float(total) / len(y), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mnist", type=Path, required=True)
    ap.add_argument("--n", type=int, default=60_000)
    ap.add_argument("--model", default="regnetx_002")
    ap.add_argument("--rgb", type=int, default=50_000, help="synthetic 3x32x32 images to time")
    args = ap.parse_args()
    device = resolve_device("cuda")
    print(torch.__version__, torch.cuda.get_device_name(device),
          "cudnn", torch.backends.cudnn.version(), flush=True)
    d = np.load(args.mnist)
    x = torch.from_numpy(d["x_train"][: args.n][:, None].copy())
    y = d["y_train"][: args.n].astype(np.int64)
    xt, yt = torch.from_numpy(d["x_test"][:, None].copy()), d["y_test"].astype(np.int64)
    mean, std = input_statistics(x)
    rows = []
    for amp in (False, True):
        for cl in (False, True):
            torch.manual_seed(0)
            cfg = TrainConfig(device=str(device), amp=amp, channels_last=cl)
            tr = Trainer(create_model(args.model, (1, 28, 28), 10, mean, std), x, y, cfg)
            s1 = tr.train_epoch()
            s2 = tr.train_epoch()
            acc = float((tr.evaluate(xt, yt).pred == yt).mean())
            torch.manual_seed(0)
            body = create_model(args.model, (1, 28, 28), 10, mean, std).body.to(device)
            if cl:
                body = body.to(memory_format=torch.channels_last)
            body._opt = torch.optim.SGD(body.parameters(), lr=0.1, momentum=0.9,
                                        weight_decay=5e-4)
            xd, yd = x.to(device), torch.from_numpy(y).to(device)
            md, sd = mean.to(device), std.to(device)
            p1 = plain_epoch(body, xd, yd, md, sd, amp, cl, device)
            p2 = plain_epoch(body, xd, yd, md, sd, amp, cl, device)
            row = {"amp": amp, "channels_last": cl, "trainer_loss": [s1.train_loss, s2.train_loss],
                   "trainer_test_acc": acc, "trainer_s": s2.seconds,
                   "plain_loss": [p1[0], p2[0]], "plain_s": p2[1],
                   "ratio_trainer_over_plain": p2[1] / s2.seconds}
            if amp and not cl or (not amp and not cl):
                t0 = time.perf_counter()
                ev = tr.evaluate()
                torch.cuda.synchronize()
                t1 = time.perf_counter()
                mix = fit_loss_mixture(ev.loss)
                t2 = time.perf_counter()
                probe_order_parameters(tr.model, tr.x, tr.y, batch_size=128,
                                       split=mix.posterior(ev.loss) > 0.5)
                torch.cuda.synchronize()
                t3 = time.perf_counter()
                row.update({"eval_pass_s": t1 - t0, "mixture_s": t2 - t1, "probe_s": t3 - t2})
            row["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.rgb:
        g = torch.Generator().manual_seed(0)
        xr = torch.randint(0, 256, (args.rgb, 3, 32, 32), dtype=torch.uint8, generator=g)
        yr = torch.randint(0, 10, (args.rgb,), generator=g).numpy()
        mr, sr = input_statistics(xr)
        for amp in (False, True):
            tr = Trainer(create_model(args.model, (3, 32, 32), 10, mr, sr), xr, yr,
                         TrainConfig(device=str(device), amp=amp, channels_last=False))
            tr.train_epoch()
            print(json.dumps({"rgb": args.rgb, "amp": amp,
                              "trainer_s": tr.train_epoch().seconds}), flush=True)


if __name__ == "__main__":
    main()

"""What each way of running the per-sample eval pass costs, in one process.

For the default model of each kind of image (regnetx_002 on MNIST digits, the
colour default on CIFAR-10N photos), after two training epochs so the batch
norms hold real statistics, times one eval pass over the same images:

* ``eager_nchw_1024``: the unfolded model, default layout, batch 1024 (0.6);
* ``channels_last_1024``: the same in channels-last;
* ``folded_1024``: batch norms folded (``models.fold_batch_norm``), channels-last;
* ``folded_auto``: the same at ``training.eval_batch_size``'s batch (0.7's pass);
* ``jit_frozen``: TorchScript trace, freeze and ``optimize_for_inference`` of
  the unfolded channels-last model (the trace's own cost is ``jit_build``,
  paid every epoch since the weights change);
* ``bf16_autocast``: ``folded_auto`` under bf16 autocast, with the largest
  logit difference to fp32 (``bf16_max_logit_error``).

Fastest of ``--reps`` passes each; the ratios to ``eager_nchw_1024`` are what
docs/performance.md quotes.

    python studies/eval_pass_variants.py --n 8192 --threads 2 --json bench_out/eval_variants.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from labelclean.models import create_model, default_model, fold_batch_norm, input_statistics
from labelclean.training import TrainConfig, Trainer, eval_batch_size

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


def _images(kind: str, n: int) -> tuple[torch.Tensor, object]:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_speed import cifar_tiled, mnist

    return mnist(n) if kind == "mnist" else cifar_tiled(n, SHARED / "cifar10n_dev")


def _pass(model: torch.nn.Module, x: torch.Tensor, batch: int, bf16: bool = False
          ) -> torch.Tensor:
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(x), batch):
            out.append(model(x[i : i + batch]).float())
    return torch.cat(out)


def measure(kind: str, n: int, reps: int) -> dict:
    x, y = _images(kind, n)
    shape = tuple(x.shape[1:])
    mean, std = input_statistics(x)
    name = default_model("images", shape)
    torch.manual_seed(0)
    trainer = Trainer(create_model(name, shape, 10, mean, std), x, y,
                      TrainConfig(lr=0.05, batch_size=128, device="cpu"))
    for _ in range(2):
        trainer.train_epoch()
    cl = trainer.model.eval()
    nchw = copy.deepcopy(cl).to(memory_format=torch.contiguous_format)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    auto = eval_batch_size(cl, x[:2], torch.device("cpu"))
    folded = fold_batch_norm(cl)
    start = time.perf_counter()
    with torch.no_grad():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(cl, x_cl[:64])))
    jit_build = time.perf_counter() - start
    variants = {
        "eager_nchw_1024": lambda: _pass(nchw, x, 1024),
        "channels_last_1024": lambda: _pass(cl, x_cl, 1024),
        "folded_1024": lambda: _pass(folded, x_cl, 1024),
        "folded_auto": lambda: _pass(folded, x_cl, auto),
        "jit_frozen": lambda: _pass(frozen, x_cl, 1024),
        "bf16_autocast": lambda: _pass(folded, x_cl, auto, bf16=True),
    }
    best = {k: float("inf") for k in variants}
    outs = {}
    for _ in range(reps):  # interleaved, so a noisy neighbour hits every variant alike
        for k, f in variants.items():
            start = time.perf_counter()
            outs[k] = f()
            best[k] = min(best[k], time.perf_counter() - start)
    ref = outs["eager_nchw_1024"]
    return {
        "kind": kind, "model": name, "n": n, "auto_batch": auto, "seconds": best,
        "ratio_to_eager_nchw_1024": {k: v / best["eager_nchw_1024"] for k, v in best.items()},
        "jit_build_seconds": jit_build,
        "max_logit_error": {k: float((o - ref).abs().max()) for k, o in outs.items()},
        "bf16_max_logit_error": float((outs["bf16_autocast"] - ref).abs().max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", nargs="+", default=["mnist", "cifar"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(kind, args.n, args.reps) for kind in args.kinds]
    text = json.dumps(rows, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()

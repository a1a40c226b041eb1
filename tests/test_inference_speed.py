"""The per-sample pass's speed-ups change nothing but speed: batch norms folded
into convolutions, cache-sized eval batches, channels-last on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labelclean.models import create_model, fold_batch_norm
from labelclean.training import TrainConfig, Trainer, eval_batch_size


def _randomise_norms(model: nn.Module, seed: int = 0, negative: bool = False) -> None:
    """Batch-norm statistics and affine parameters far from their initial values,
    so that folding them is not a no-op."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)
                if negative:
                    m.weight[0] = -0.7


def _model(name: str, shape: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    c = shape[0]
    return create_model(name, shape, 5, torch.full((1, c, 1, 1), 100.0),
                        torch.full((1, c, 1, 1), 60.0))


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name, shape, left", [
    ("regnetx_002", (1, 28, 28), 0),       # timm ConvNormAct throughout
    ("cnn:16,32", (3, 32, 32), 0),         # conv, norm and conv, pool, norm
    ("resnet10t", (3, 32, 32), None),      # the stem only: blocks are left alone
])
def test_folded_copy_computes_the_same_logits(name, shape, left):
    model = _model(name, shape)
    _randomise_norms(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, 256, (16, *shape), dtype=torch.uint8)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        folded = fold_batch_norm(model)
        got = folded(x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert _norms(folded) < _norms(model)
    if left is not None:
        assert _norms(folded) == left
    # the model itself is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_norm_with_a_negative_scale_is_not_folded_through_a_max_pool():
    model = _model("cnn:16,32", (3, 32, 32))
    _randomise_norms(model, negative=True)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    model.eval()
    with torch.no_grad():
        folded = fold_batch_norm(model)
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    # max(-a x) is not -a max(x): the two pool-then-norm pairs keep their norms
    assert _norms(folded) == 2


def test_eval_batch_fits_the_cache_on_the_cpu_only():
    cnn = _model("cnn:32,64,128", (3, 32, 32))
    mlp = _model("mlp:32", (1, 28, 28))
    x_rgb = torch.zeros((2, 3, 32, 32), dtype=torch.uint8)
    # 32 maps of 31x31 floats per image at the widest: 128 images fill 16 MiB
    assert eval_batch_size(cnn, x_rgb, torch.device("cpu")) == 128
    assert eval_batch_size(mlp, torch.zeros((2, 1, 28, 28), dtype=torch.uint8),
                           torch.device("cpu")) == 1024
    assert eval_batch_size(cnn, x_rgb, torch.device("cuda")) == 1024
    assert cnn.training  # measured in eval mode, handed back as it came


def test_trainer_measures_with_the_folded_copy_of_the_current_weights():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = np.arange(96) % 5
    model = _model("cnn:8,16", (3, 16, 16))
    trainer = Trainer(model, x, y, TrainConfig(batch_size=16, lr=0.05, device="cpu"))
    assert trainer.channels_last  # the CPU default too

    def reference() -> np.ndarray:
        trainer.model.eval()
        with torch.no_grad():
            return F.cross_entropy(trainer.model(x), torch.from_numpy(y),
                                   reduction="none").numpy()

    for _ in range(2):  # the copy follows the weights from epoch to epoch
        trainer.train_epoch()
        stats = trainer.evaluate()
        np.testing.assert_allclose(stats.loss, reference(), rtol=1e-4, atol=1e-5)
    state = trainer.state_dict()
    trainer.train_epoch()
    trainer.load_state_dict(state)  # and after weights are loaded
    np.testing.assert_allclose(trainer.evaluate().loss, reference(), rtol=1e-4, atol=1e-5)
    trainer.train_epoch()
    trainer.load_weights(state["model"])
    np.testing.assert_allclose(trainer.evaluate().loss, reference(), rtol=1e-4, atol=1e-5)


def test_channels_last_training_matches_the_default_layout():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = np.arange(64) % 5
    losses = {}
    for layout in (False, True):
        t = Trainer(_model("cnn:8,16", (3, 16, 16)), x, y,
                    TrainConfig(batch_size=16, lr=0.05, device="cpu", channels_last=layout))
        losses[layout] = [t.train_epoch().train_loss for _ in range(2)]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)

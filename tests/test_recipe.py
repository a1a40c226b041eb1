"""The colour-photo recipe (models.RGB_RECIPE): which runs get it, and what each of its
parts does to training and to the per-sample pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labelclean import Cleaner
from labelclean.errors import LabelcleanError
from labelclean.models import (
    PLAIN_RECIPE,
    RGB_RECIPE,
    create_model,
    default_recipe,
    input_statistics,
)
from labelclean.training import TrainConfig, Trainer

torch.set_num_threads(1)


def images(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Colour images whose class is which third of the image is bright."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, 3, 12, 12)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, :, 4 * c : 4 * c + 4, :] += 150
    return torch.from_numpy(x), y


def cnn(x: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(0)
    mean, std = input_statistics(x)
    return create_model("cnn:8,16", (3, 12, 12), 3, mean, std)


def test_colour_images_from_scratch_get_the_recipe_and_others_plain_sgd():
    cfg = Cleaner().train_config(10_000, input_shape=(3, 32, 32), kind="images")
    assert (cfg.batch_size, cfg.label_smoothing, cfg.ema) == (
        RGB_RECIPE.batch_size, RGB_RECIPE.label_smoothing, RGB_RECIPE.ema)
    assert cfg.eval_flip and cfg.nesterov
    assert cfg.lr == pytest.approx(0.1 * RGB_RECIPE.batch_size / 128)
    mono = Cleaner().train_config(10_000, input_shape=(1, 28, 28), kind="images")
    assert (mono.batch_size, mono.label_smoothing, mono.ema, mono.eval_flip) == (128, 0, 0, False)
    assert default_recipe("features", (20,)) is PLAIN_RECIPE
    assert not default_recipe("images", (3, 32, 32), pretrained=True).whiten
    # what the user sets wins; mirror images are scored only where training mirrors
    own = Cleaner(batch_size=64, augment="shift").train_config(
        10_000, input_shape=(3, 32, 32), kind="images")
    assert own.batch_size == 64 and not own.eval_flip


def test_whitening_decorrelates_the_stems_patches():
    x, _ = images(200)
    model = cnn(x)
    assert model.init_whitening(x)
    stem = model.body.features[0]
    assert not stem.weight.requires_grad  # frozen, as airbench does
    with torch.no_grad():
        out = stem(model.prepare(x))  # (N, 24, 11, 11)
    k = 6  # 12 patch dimensions; the first half of the channels, largest eigenvalues first
    z = out[:, :k].permute(0, 2, 3, 1).reshape(-1, k).double()
    cov = torch.cov(z.T)
    assert torch.allclose(torch.diagonal(cov), torch.ones(k, dtype=torch.double), atol=0.05)
    off = cov - torch.diag(torch.diagonal(cov))
    assert off.abs().max() < 0.05
    # the second half is the first, negated (the GELU after it keeps either sign)
    half = stem.out_channels // 2
    torch.testing.assert_close(stem.weight[half:], -stem.weight[:half])
    assert not create_model("mlp:8", (3, 12, 12), 3, torch.zeros(3, 1, 1),
                            torch.ones(3, 1, 1)).init_whitening(x)


def test_eval_flip_scores_an_image_and_its_mirror_alike():
    x, y = images()
    model = cnn(x)
    flipped = x.flip(-1)
    on = Trainer(model, x, y, TrainConfig(eval_flip=True, batch_size=32))
    a, b = on.evaluate(x, y), on.evaluate(flipped, y)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-4, atol=1e-5)
    off = Trainer(model, x, y, TrainConfig(eval_flip=False, batch_size=32))
    assert not np.allclose(off.evaluate(x, y).loss, off.evaluate(flipped, y).loss, atol=1e-5)


def test_the_per_sample_pass_measures_the_weight_average():
    x, y = images()
    trainer = Trainer(cnn(x), x, y, TrainConfig(ema=0.9, batch_size=16, lr=0.05))
    trainer.train_epoch()
    assert trainer.steps == 6
    trained = dict(trainer.model.named_parameters())
    averaged = dict(trainer.averaged.named_parameters())
    assert any(not torch.allclose(trained[k], averaged[k]) for k in trained)
    # the pass runs the average: the same numbers as evaluating the averaged copy by hand
    with torch.no_grad():
        logits = trainer.averaged.eval()(x)
    expect = F.cross_entropy(logits, torch.as_tensor(y), reduction="none").numpy()
    np.testing.assert_allclose(trainer.evaluate().loss, expect, rtol=1e-4, atol=1e-4)
    assert trainer.measured is trainer.averaged
    # the state round-trips, the average included
    state = trainer.state_dict()
    again = Trainer(cnn(x), x, y, TrainConfig(ema=0.9, batch_size=16, lr=0.05))
    again.load_state_dict(state)
    np.testing.assert_allclose(again.evaluate().loss, trainer.evaluate().loss, rtol=1e-5)
    assert again.steps == trainer.steps
    # loading weights (those at t_c) sets both
    again.load_weights(trainer.model.state_dict())
    for k, v in again.averaged.named_parameters():
        torch.testing.assert_close(v, dict(trainer.model.named_parameters())[k])
    assert Trainer(cnn(x), x, y, TrainConfig()).averaged is None


def test_label_smoothing_is_the_training_loss():
    x, y = images()
    losses = []
    for smoothing in (0.0, 0.3):
        trainer = Trainer(cnn(x), x, y, TrainConfig(label_smoothing=smoothing, batch_size=96,
                                                    lr=1e-9, momentum=0.0))
        losses.append(trainer.train_epoch().train_loss)
    with torch.no_grad():
        logits = cnn(x).train()(x)
    target = torch.as_tensor(y)
    assert losses[0] == pytest.approx(float(F.cross_entropy(logits, target)), rel=1e-3)
    assert losses[1] == pytest.approx(
        float(F.cross_entropy(logits, target, label_smoothing=0.3)), rel=1e-3)
    with pytest.raises(LabelcleanError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)
    with pytest.raises(LabelcleanError, match="ema"):
        TrainConfig(ema=-0.1)

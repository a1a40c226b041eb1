"""``compile=True`` runs the same training through torch.compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelclean.models import create_model
from labelclean.training import TrainConfig, Trainer


@pytest.mark.slow  # inductor compiles C++ kernels: ~40 s on a 2-core CPU
def test_compiled_training_matches_eager():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(96, 6)).astype(np.float32))
    y = rng.integers(0, 3, 96)
    runs = []
    for compile in (False, True):
        torch._dynamo.reset()
        torch.manual_seed(0)
        model = create_model("mlp:8", (6,), 3, torch.zeros(6), torch.ones(6))
        trainer = Trainer(model, x, y, TrainConfig(batch_size=32, compile=compile))
        losses = [trainer.train_epoch().train_loss for _ in range(2)]
        runs.append((losses, trainer.evaluate().loss, trainer.state_dict()["model"]))
    (eager_losses, eager_eval, eager_state), (comp_losses, comp_eval, comp_state) = runs
    assert np.allclose(eager_losses, comp_losses, rtol=1e-4)
    assert np.allclose(eager_eval, comp_eval, atol=1e-4)
    # the compiled wrapper trains the model's own parameters, which the state dict holds
    for k in eager_state:
        assert torch.allclose(eager_state[k], comp_state[k], atol=1e-4)

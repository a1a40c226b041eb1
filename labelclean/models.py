"""Models: one entry point, :func:`create_model`, for timm networks and small MLPs.

Every model labelclean trains is a :class:`Classifier`: the network wrapped with
its own input normalisation, so it takes raw inputs (``uint8`` images as stored
in :class:`~labelclean.sources.Dataset`, or raw features) and a saved checkpoint
needs nothing else to be used.

Model names
-----------
``"<timm name>"``
    Any model ``timm.create_model`` knows, e.g. ``"resnet18"`` or
    ``"lcnet_050"``, with ``in_chans`` and ``num_classes`` set to the data's.
``"mlp"`` or ``"mlp:30,30"``
    A fully connected ReLU network with the given hidden widths (default
    ``256,256``); images are flattened. ``"mlp:30,30"`` on MNIST is the
    paper's 784-30-30-10 network.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import LabelcleanError

#: Default for image inputs: a small timm RegNet (2.3M parameters) that learns
#: MNIST-like data within a few epochs from random initialisation and runs at
#: about 550 images/s (28x28, training) on a 2-core laptop CPU. Faster timm
#: networks we tried (lcnet_050, mobilenetv3) learned several times slower per
#: epoch from scratch; see docs/performance.md.
DEFAULT_IMAGE_MODEL = "regnetx_002"
#: Default for feature tables.
DEFAULT_FEATURE_MODEL = "mlp:256,256"


class Classifier(nn.Module):
    """A network preceded by a fixed per-channel (or per-feature) normalisation.

    ``forward`` accepts ``uint8`` or float inputs; the normalisation constants
    are buffers, so they travel with ``state_dict`` and with ``.to(device)``.
    """

    def __init__(self, body: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clamp_min(1e-6).clone())

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalise(x))

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)``: the penultimate features (what the last
        layer reads) and the logits, from one forward pass.

        timm networks: ``forward_features`` then ``forward_head(pre_logits=True)``
        (the pooled, pre-classifier vector); an :class:`MLP`: its last hidden layer.
        """
        h = self.normalise(x)
        if isinstance(self.body, MLP):
            features = self.body.net[:-1](h)
            return features, self.body.net[-1](features)
        if hasattr(self.body, "forward_features") and hasattr(self.body, "forward_head"):
            trunk = self.body.forward_features(h)
            return (self.body.forward_head(trunk, pre_logits=True),
                    self.body.forward_head(trunk))
        raise LabelcleanError(f"cannot take embeddings from a {type(self.body).__name__}")


class MLP(nn.Module):
    """Fully connected ReLU network; flattens its input."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def parse_mlp(name: str) -> tuple[int, ...] | None:
    """Hidden widths of an ``"mlp[:w1,w2,...]"`` name, or ``None`` for other names."""
    if name != "mlp" and not name.startswith("mlp:"):
        return None
    if name == "mlp":
        return (256, 256)
    try:
        widths = tuple(int(w) for w in name[4:].split(",") if w.strip())
    except ValueError:
        raise LabelcleanError(f"bad MLP spec {name!r}: use e.g. mlp:30,30") from None
    if any(w <= 0 for w in widths):
        raise LabelcleanError(f"bad MLP spec {name!r}: widths must be positive")
    return widths


def create_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    pretrained: bool = False,
) -> Classifier:
    """Build a :class:`Classifier` for inputs of ``input_shape``.

    Parameters
    ----------
    name:
        A timm model name or an ``mlp[:widths]`` spec (see the module docstring).
    input_shape:
        ``(C, H, W)`` for images, ``(D,)`` for features.
    num_classes:
        Number of output logits.
    mean, std:
        Normalisation constants, shaped to broadcast against one input
        (``(C, 1, 1)`` for images, ``(D,)`` for features), in the input's units.
    pretrained:
        Load timm's pretrained weights (needs network access the first time).
    """
    hidden = parse_mlp(name)
    if hidden is not None:
        in_features = 1
        for s in input_shape:
            in_features *= int(s)
        body: nn.Module = MLP(in_features, hidden, num_classes)
    else:
        import timm

        if not timm.is_model(name):
            raise LabelcleanError(
                f"unknown model {name!r}: not a timm model name nor 'mlp[:w,...]'"
            )
        if len(input_shape) != 3:
            raise LabelcleanError(
                f"model {name!r} needs images; for feature tables use an MLP (e.g. --model mlp)"
            )
        try:
            body = timm.create_model(
                name, pretrained=pretrained, num_classes=num_classes, in_chans=int(input_shape[0])
            )
        except Exception as e:  # timm raises many types; the user needs one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LabelcleanError(f"cannot create timm model {name!r}: {first}") from None
    return Classifier(body, mean, std)


def default_model(kind: str) -> str:
    return DEFAULT_IMAGE_MODEL if kind == "images" else DEFAULT_FEATURE_MODEL

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
``"cnn"`` or ``"cnn:32,64,128"``
    A small convolutional network for small images trained from scratch
    (:class:`SmallCNN`, after the airbench CIFAR-10 trainers): one group of
    two 3x3 convolutions per width, each group halving the resolution.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import LabelcleanError

#: Default for single-channel images: a small timm RegNet (2.3M parameters)
#: that learns MNIST-like data within a few epochs from random initialisation.
#: Faster timm networks we tried (lcnet_050, mobilenetv3) learned several times
#: slower per epoch from scratch; see docs/performance.md.
DEFAULT_IMAGE_MODEL = "regnetx_002"
#: Default for colour images: regnetx_002 reduces a 32 px photo to one pixel
#: after its stem and learned CIFAR-10N several times slower per epoch than
#: this network, which keeps the resolution longer (the table that chose it is
#: in docs/benchmarks.md, "Choosing the default for colour images").
DEFAULT_RGB_MODEL = "cnn:32,64,128"
#: Training augmentation per default model: colour photos are translated and
#: mirrored; digits and other single-channel images are left alone (a
#: mirrored digit is another glyph).
DEFAULT_RGB_AUGMENT = "shift-flip"
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


class SmallCNN(nn.Module):
    """A small convolutional network for small images learned from scratch.

    After Keller Jordan's airbench CIFAR-10 trainers: a 2x2 stem convolution,
    then per width one group ``conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3
    -> BN -> GELU``, a global max-pool and a linear head. A 32 px image keeps
    16x16 and 8x8 feature maps, where timm's ImageNet networks are down to 1x1
    after their stem. ``forward_features``/``forward_head`` follow timm's
    protocol, so embeddings are taken the same way.
    """

    def __init__(self, in_chans: int, widths: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_chans, 24, 2), nn.GELU()]
        width = 24
        for w in widths:
            layers += [
                nn.Conv2d(width, w, 3, padding=1, bias=False),
                nn.MaxPool2d(2, ceil_mode=True),  # ceil: a 1x1 map stays 1x1
                nn.BatchNorm2d(w), nn.GELU(),
                nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.GELU(),
            ]
            width = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes, bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.amax((2, 3))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _parse_widths(name: str, family: str, default: tuple[int, ...]) -> tuple[int, ...] | None:
    """Widths of a ``"<family>[:w1,w2,...]"`` name, or ``None`` for other names."""
    if name != family and not name.startswith(family + ":"):
        return None
    if name == family:
        return default
    example = "mlp:30,30" if family == "mlp" else "cnn:32,64,128"
    try:
        widths = tuple(int(w) for w in name[len(family) + 1 :].split(",") if w.strip())
    except ValueError:
        raise LabelcleanError(f"bad {family.upper()} spec {name!r}: use e.g. {example}") from None
    if not widths or any(w <= 0 for w in widths):
        raise LabelcleanError(f"bad {family.upper()} spec {name!r}: widths must be positive")
    return widths


def parse_mlp(name: str) -> tuple[int, ...] | None:
    """Hidden widths of an ``"mlp[:w1,w2,...]"`` name, or ``None`` for other names."""
    return _parse_widths(name, "mlp", (256, 256))


def parse_cnn(name: str) -> tuple[int, ...] | None:
    """Group widths of a ``"cnn[:w1,w2,...]"`` name, or ``None`` for other names."""
    return _parse_widths(name, "cnn", (32, 64, 128))


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
    widths = parse_cnn(name)
    if widths is not None:
        if len(input_shape) != 3:
            raise LabelcleanError(
                f"model {name!r} needs images; for feature tables use an MLP (e.g. --model mlp)"
            )
        body: nn.Module = SmallCNN(int(input_shape[0]), widths, num_classes)
    elif hidden is not None:
        in_features = 1
        for s in input_shape:
            in_features *= int(s)
        body = MLP(in_features, hidden, num_classes)
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


def default_model(kind: str, input_shape: tuple[int, ...] = ()) -> str:
    """The model a run uses when none is named: by input kind, and for images by
    their channels (see :data:`DEFAULT_RGB_MODEL`)."""
    if kind != "images":
        return DEFAULT_FEATURE_MODEL
    return DEFAULT_RGB_MODEL if input_shape and int(input_shape[0]) == 3 else DEFAULT_IMAGE_MODEL


def default_augment(kind: str, input_shape: tuple[int, ...] = ()) -> str:
    """The training augmentation a run uses when none is named (see
    :data:`DEFAULT_RGB_AUGMENT`)."""
    rgb = kind == "images" and input_shape and int(input_shape[0]) == 3
    return DEFAULT_RGB_AUGMENT if rgb else "none"


#: Input statistics are computed from one float copy of up to this many bytes, else in chunks.
STATS_IN_ONE_GO_BYTES = 256 << 20


def input_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (images) or per-feature mean and std, in the input's units."""
    if x.dim() == 4:
        n = min(len(x), 20_000)
        if n * x[0].numel() * 4 <= STATS_IN_ONE_GO_BYTES:
            xs = x[:n].float()
            mean = xs.mean(dim=(0, 2, 3)).reshape(-1, 1, 1)
            std = xs.std(dim=(0, 2, 3)).reshape(-1, 1, 1)
        else:  # large (e.g. memory-mapped) images: never one float copy of them all
            s1 = torch.zeros(x.shape[1], dtype=torch.float64)
            s2 = torch.zeros_like(s1)
            for s in range(0, n, 256):
                xs = x[s : min(n, s + 256)].double()
                s1 += xs.sum(dim=(0, 2, 3))
                s2 += xs.square().sum(dim=(0, 2, 3))
            count = n * x.shape[2] * x.shape[3]
            m = s1 / count
            mean = m.float().reshape(-1, 1, 1)
            std = ((s2 - count * m * m) / (count - 1)).clamp_min(0).sqrt().float().reshape(-1, 1, 1)
    else:
        mean, std = x.float().mean(0), x.float().std(0)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` with each batch norm that directly follows
    a convolution folded into that convolution's weights and bias.

    In eval mode a batch norm is a per-channel affine map, so ``bn(conv(x))``
    equals one convolution with rescaled weights; the copy skips a pass over
    every activation map. Folded are a ``Conv2d`` followed by a ``BatchNorm2d``
    in an ``nn.Sequential`` and timm's ``ConvNormAct`` (whose ``BatchNormAct2d``
    keeps its dropout and activation); any other batch norm is left as it is,
    since only these two places guarantee that the norm reads the convolution's
    output and nothing else. ``model`` itself is not changed; the copy is in
    eval mode and is for forward passes only.
    """
    import copy

    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in folded.modules():
            if isinstance(module, nn.Sequential):
                for i in range(len(module) - 1):
                    conv, bn = module[i], module[i + 1]
                    if _foldable(conv, bn) and type(bn) is nn.BatchNorm2d:
                        _fold_into(conv, bn)
                        module[i + 1] = nn.Identity()
                    # conv, max-pool, norm (SmallCNN): a max commutes with an
                    # increasing affine map, so a norm whose every channel scales
                    # by a positive factor folds through the pool
                    bn = module[i + 2] if i + 2 < len(module) else None
                    if (isinstance(module[i + 1], nn.MaxPool2d) and _foldable(conv, bn)
                            and type(bn) is nn.BatchNorm2d and bool((_scale(bn) > 0).all())):
                        _fold_into(conv, bn)
                        module[i + 2] = nn.Identity()
            conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
            if type(module).__name__ == "ConvNormAct" and _foldable(conv, bn):
                _fold_into(conv, bn)
                # timm's BatchNormAct2d: norm, then its dropout and activation
                rest = [getattr(bn, name, None) for name in ("drop", "act")]
                module.bn = nn.Sequential(*[m for m in rest if m is not None])
    return folded


def _foldable(conv: nn.Module | None, bn: nn.Module | None) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            and bn.running_mean is not None and conv.out_channels == bn.num_features)


def _scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    """The per-channel factor of ``bn`` in eval mode."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    return scale if bn.weight is None else scale * bn.weight


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Rewrite ``conv`` so that it computes ``bn(conv(x))`` in eval mode."""
    scale = _scale(bn)
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter(shift.to(conv.weight.dtype))

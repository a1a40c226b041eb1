"""Models: one entry point, :func:`create_model`, for timm networks and small MLPs.

Every model labelclean trains is a :class:`Classifier`: the network wrapped with
its own input normalisation, so it takes raw inputs (``uint8`` images as stored
in :class:`~labelclean.sources.Dataset`, or raw features) and a saved checkpoint
needs nothing else to be used.

Model names
-----------
``"<timm name>"``
    Any model ``timm.create_model`` knows, e.g. ``"resnet18"`` or
    ``"lcnet_050"``, with ``in_chans`` and ``num_classes`` set to the data's;
    the only kind that can start from pretrained weights (timm's, or a file's).
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

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_file_setting
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
#: timm's interpolation names as ``F.interpolate`` modes: torch has no Lanczos,
#: and bicubic is its nearest kin.
INTERPOLATION_MODES = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic",
                       "lanczos": "bicubic"}


@dataclass(frozen=True)
class Recipe:
    """How a kind of input is trained, beyond the SGD settings a user sets: what
    :class:`~labelclean.training.TrainConfig` takes from it (``batch_size``
    ``None``: the rule of ``batch_size="auto"``), and ``whiten``, whether a
    network that can (:meth:`SmallCNN.init_whitening`) starts its stem from the
    data's patch statistics. The per-sample losses and margins still come from
    one deterministic pass over un-augmented images (``eval_flip`` adds their
    mirror images to it); ``ema`` makes that pass measure a running average of
    the weights, the order parameters still the weights SGD moves."""

    augment: str = "none"
    batch_size: int | None = None
    label_smoothing: float = 0.0
    eval_flip: bool = False
    nesterov: bool = False
    ema: float = 0.0
    whiten: bool = False

    def train_settings(self) -> dict:
        """What :class:`~labelclean.training.TrainConfig` takes from it."""
        return {"label_smoothing": self.label_smoothing, "eval_flip": self.eval_flip,
                "nesterov": self.nesterov, "ema": self.ema}


#: Colour photos from scratch: chosen on CIFAR-10N ('worse', the development set)
#: by the model's accuracy against the clean labels per epoch and the ranking of
#: the wrong ones (docs/benchmarks.md, "A learner for photos"), after airbench's
#: recipe: a whitened stem, label smoothing, Nesterov momentum, more and smaller
#: steps, a weight average for the per-sample pass and flip-averaged scoring.
RGB_RECIPE = Recipe(augment=DEFAULT_RGB_AUGMENT, batch_size=32, label_smoothing=0.2,
                    eval_flip=True, nesterov=True, ema=0.995, whiten=True)
#: Colour photos from pretrained weights: their own features need no whitened
#: stem, and a fine-tuning recipe has not been measured yet: shifts and flips only.
PRETRAINED_RGB_RECIPE = Recipe(augment=DEFAULT_RGB_AUGMENT)
#: Everything else (single-channel images, feature tables): plain SGD, as the
#: MNIST and digits numbers were measured.
PLAIN_RECIPE = Recipe()


def default_recipe(kind: str, input_shape: tuple[int, ...] = (),
                   pretrained: bool = False) -> Recipe:
    """The :class:`Recipe` a run uses for inputs of ``kind`` and ``input_shape``."""
    if not (kind == "images" and input_shape and int(input_shape[0]) == 3):
        return PLAIN_RECIPE
    return PRETRAINED_RGB_RECIPE if pretrained else RGB_RECIPE


class Classifier(nn.Module):
    """A network preceded by a fixed per-channel (or per-feature) normalisation
    and, for a pretrained network, a resize to the input size it was trained at.

    ``forward`` accepts ``uint8`` or float inputs; the normalisation constants
    are buffers, so they travel with ``state_dict`` and with ``.to(device)``.

    The resize (``input_size``, ``interpolation``: from timm's pretrained config)
    happens here, batch by batch on the training device, rather than when the
    images are read: the decoded images and their cache stay at their native
    size (a 224 px copy of a 32 px set would take 49 times the memory), and the
    training augmentation keeps working in native pixels. Downsampling is
    antialiased, as resizing a photo for the network is.
    """

    def __init__(self, body: nn.Module, mean: torch.Tensor, std: torch.Tensor,
                 input_size: tuple[int, int] | None = None,
                 interpolation: str | None = None) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clamp_min(1e-6).clone())
        self.input_size = None if input_size is None else (int(input_size[0]),
                                                           int(input_size[1]))
        self.interpolation = None if input_size is None else (interpolation or "bilinear")
        if self.interpolation is not None and self.interpolation not in INTERPOLATION_MODES:
            raise LabelcleanError(f"unknown interpolation {interpolation!r}: use one of "
                                  f"{', '.join(INTERPOLATION_MODES)}")

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (images) at ``input_size``; unchanged without one."""
        if self.input_size is None or x.dim() != 4 or tuple(x.shape[-2:]) == self.input_size:
            return x
        mode = INTERPOLATION_MODES[self.interpolation]
        if mode == "nearest":
            return F.interpolate(x, size=self.input_size, mode=mode)
        down = x.shape[-2] > self.input_size[0] or x.shape[-1] > self.input_size[1]
        return F.interpolate(x, size=self.input_size, mode=mode, align_corners=False,
                             antialias=down)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs as the network reads them: normalised, then resized (a
        per-channel affine map commutes with interpolation, and normalising first
        works on the smaller images when upsampling)."""
        return self.resize(self.normalise(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(x))

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor, n: int = 5000) -> bool:
        """Whiten the network's stem from (up to ``n`` of) the raw inputs ``x``,
        where the network knows how (:meth:`SmallCNN.init_whitening`); whether it did."""
        if not hasattr(self.body, "init_whitening") or x.dim() != 4:
            return False
        self.body.init_whitening(self.prepare(x[:n].to(self.mean.device)))
        return True

    def input_config(self) -> dict:
        """How raw inputs are prepared, as plain values (``model.json``, ``run.json``):
        ``mean`` and ``std`` in the input's units, ``input_size`` ``[H, W]`` and
        ``interpolation`` (both ``None`` when inputs are not resized)."""
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
                "input_size": None if self.input_size is None else list(self.input_size),
                "interpolation": self.interpolation}

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)``: the penultimate features (what the last
        layer reads) and the logits, from one forward pass.

        timm networks: ``forward_features`` then ``forward_head(pre_logits=True)``
        (the pooled, pre-classifier vector); an :class:`MLP`: its last hidden layer.
        """
        h = self.prepare(x)
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

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the 2x2 stem to whiten the patches of ``x`` (normalised images), as
        airbench does: its filters are the patch covariance's eigenvectors scaled
        by their inverse root eigenvalues, each also negated (the GELU after it
        keeps either sign). Frozen: the first layer then starts, and stays, a
        decorrelating map, which lets the layers above learn at once."""
        stem = self.features[0]
        c = x.shape[1]
        patches = F.unfold(x.float(), 2).transpose(1, 2).reshape(-1, c * 4)
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigvals, eigvecs = torch.linalg.eigh(cov.double())
        w = (eigvecs.T / (eigvals.clamp_min(0) + eps).sqrt()[:, None]).float()
        w = w.reshape(c * 4, c, 2, 2)
        k = min(stem.out_channels // 2, len(w))
        stem.weight.zero_()
        stem.weight[:k] = w.flip(0)[:k]  # largest eigenvalues first
        stem.weight[k : 2 * k] = -w.flip(0)[:k]
        if stem.bias is not None:
            stem.bias.zero_()
        stem.weight.requires_grad_(False)

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
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    *,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    input_size: tuple[int, int] | None = None,
    interpolation: str | None = None,
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
        Pretrained: ``None`` takes them from the model's pretrained config.
    pretrained:
        Load timm's pretrained weights (needs network access the first time).
    weights:
        Load the weights from this file instead (a ``state_dict`` saved with
        ``torch.save`` or as safetensors), by timm's own loader; implies
        ``pretrained``.
    input_size, interpolation:
        Resize images to ``(H, W)`` with this interpolation before the network
        (:class:`Classifier`). Pretrained: ``None`` takes them from the model's
        pretrained config, the size it was trained at.

    With pretrained weights the classifier head is always new (the user's classes
    are not those the weights were trained on), and timm adapts the first
    convolution to ``C`` channels.
    """
    pretrained = pretrained or weights is not None
    hidden = parse_mlp(name)
    widths = parse_cnn(name)
    if pretrained and (hidden is not None or widths is not None):
        check_pretrainable(name, weights)
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
        body = _timm_body(name, int(input_shape[0]), num_classes, pretrained, weights)
        if pretrained:
            config = pretrained_input(body, int(input_shape[0]))
            mean = config["mean"] if mean is None else mean
            std = config["std"] if std is None else std
            input_size = config["input_size"] if input_size is None else input_size
            interpolation = interpolation or config["interpolation"]
    if mean is None or std is None:
        raise ValueError("mean and std are needed unless the model is pretrained")
    return Classifier(body, mean, std, input_size, interpolation)


def check_pretrainable(name: str, weights: str | os.PathLike | None = None) -> None:
    """Refuse pretrained weights for labelclean's own networks (``mlp``, ``cnn``):
    there are none, and silently training from scratch would mislead."""
    if parse_mlp(name) is not None or parse_cnn(name) is not None:
        source = f"the weights in {weights}" if weights is not None else "pretrained weights"
        raise LabelcleanError(f"{source} need a timm model (e.g. --model resnet18), not "
                              f"{name!r}: labelclean's own networks have no pretrained weights")


def _timm_body(name: str, in_chans: int, num_classes: int, pretrained: bool,
               weights: str | os.PathLike | None) -> nn.Module:
    """The timm network, its weights loaded by timm (from the hub, or ``weights``)."""
    import timm

    overlay = None
    state = None
    if weights is not None:
        state = _read_weights(Path(weights))
        # timm's own loader, as for hub weights: it drops a head of another size
        # and adapts the first convolution to in_chans
        overlay = {"file": str(weights)}
    try:
        body = timm.create_model(name, pretrained=pretrained, pretrained_cfg_overlay=overlay,
                                 num_classes=num_classes, in_chans=in_chans)
    except Exception as e:  # timm raises many types; the user needs one line
        if weights is not None:
            raise LabelcleanError(f"the weights in {weights} do not fit model {name!r}: "
                                  f"{_first_line(e)}") from None
        if pretrained:
            raise LabelcleanError(
                f"cannot load timm's pretrained weights for {name!r}: {_first_line(e)}; "
                "without access to the Hugging Face hub, start from a file with "
                "--weights PATH (docs/usage.md, 'Starting from pretrained weights')") from None
        raise LabelcleanError(f"cannot create timm model {name!r}: {_first_line(e)}") from None
    if not pretrained:
        return body
    head = body.pretrained_cfg.get("classifier") or ()
    head = (head,) if isinstance(head, str) else tuple(head)
    if state is not None:
        # timm loads leniently once it has dropped the head: a file of another
        # architecture would leave the network partly or wholly at random
        own = set(body.state_dict())

        def checked(k: str) -> bool:
            return not (k.endswith("num_batches_tracked") or any(k.startswith(h + ".")
                                                                 for h in head))

        missing = [k for k in own if k not in state and checked(k)]
        extra = [k for k in state if k not in own and checked(k)]
        if missing or extra:
            raise LabelcleanError(
                f"the weights in {weights} do not fit model {name!r}: {len(missing)} of its "
                f"tensors are not in the file and {len(extra)} of the file's are not its "
                f"(first: {(missing or extra)[0]!r}); are they another architecture's?")
    if num_classes == body.pretrained_cfg.get("num_classes") and head:
        # timm keeps a head of the same size; its classes are not the user's
        body.reset_classifier(num_classes)
    return body


def _read_weights(path: Path) -> dict:
    """The ``state_dict`` in ``path``, read as timm reads it (safetensors or
    ``torch.load(weights_only=True)``; a ``state_dict`` or ``model`` entry of a
    training checkpoint is found too)."""
    from timm.models import load_state_dict

    check_file_setting(path, "weights")
    try:
        state = load_state_dict(str(path))
    except Exception as e:  # noqa: BLE001 - unpickling and safetensors errors share no type
        raise LabelcleanError(f"cannot read the weights in {path}: {_first_line(e)} (expected "
                              "a state_dict saved with torch.save or safetensors)") from None
    if not isinstance(state, dict):
        raise LabelcleanError(f"cannot read the weights in {path}: not a state_dict")
    return state


def pretrained_input(body: nn.Module, in_chans: int) -> dict:
    """How a pretrained timm network expects its inputs (timm's
    ``resolve_data_config`` of its pretrained config): ``mean`` and ``std`` in
    ``uint8`` units shaped ``(C, 1, 1)``, ``input_size`` ``(H, W)`` and
    ``interpolation``."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=body)
    # timm's constants are in 0-1 units; labelclean's images are 0-255
    mean = torch.tensor(config["mean"], dtype=torch.float32) * 255
    std = torch.tensor(config["std"], dtype=torch.float32) * 255
    if len(mean) != in_chans:
        # timm adapted the first convolution (summed or repeated its filters over
        # the channels): each channel then stands for all of the pretrained ones
        mean, std = mean.mean().repeat(in_chans), std.mean().repeat(in_chans)
    interpolation = config["interpolation"]
    return {"mean": mean.reshape(-1, 1, 1), "std": std.reshape(-1, 1, 1),
            "input_size": tuple(int(s) for s in config["input_size"][-2:]),
            "interpolation": interpolation if interpolation in INTERPOLATION_MODES
            else "bicubic"}


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    # torch's load_state_dict says what failed on its second line
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def default_model(kind: str, input_shape: tuple[int, ...] = ()) -> str:
    """The model a run uses when none is named: by input kind, and for images by
    their channels (see :data:`DEFAULT_RGB_MODEL`)."""
    if kind != "images":
        return DEFAULT_FEATURE_MODEL
    return DEFAULT_RGB_MODEL if input_shape and int(input_shape[0]) == 3 else DEFAULT_IMAGE_MODEL


def default_augment(kind: str, input_shape: tuple[int, ...] = ()) -> str:
    """The training augmentation a run uses when none is named (the recipe's)."""
    return default_recipe(kind, input_shape).augment


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

"""Models by name: MLP and CNN-beta-l (WideResNet-shaped), both with switchable BN and skips,
deep linear, linreg.

Every model is built from nn.Linear, nn.Conv2d, nn.BatchNorm1d/2d, activations, pooling and
residual additions only, so that the probes' per-layer fast paths apply to all of them.

Initialisations (docs/theory.md):
- ``gaussian``: W ~ N(0, gain^2 / (kappa * fan_in)), kappa = 1/2 for ReLU, 1 for tanh / linear,
  gain = ``init_gain`` (default 1: for ReLU this is He, Kaiming-normal fan-in, initialisation).
  Biases are zero.
- ``orthogonal``: (semi-)orthogonal weights times ``init_gain``; biases zero.
- ``balanced`` (deep linear nets only, ``linear`` and ``linreg``): factors of one end-to-end
  matrix, exactly balanced (``balanced_factors``).
- ``default``: PyTorch's own layer initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from .errors import ConfusionError, is_count, is_number
from .spec import option_defaults

ACTIVATIONS: dict[str, tuple[Callable[[], nn.Module], float]] = {
    # name -> (module factory, kappa of the paper's Gaussian init)
    "relu": (lambda: nn.ReLU(), 0.5),
    "tanh": (lambda: nn.Tanh(), 1.0),
    "linear": (lambda: nn.Identity(), 1.0),
}
INITS = ("gaussian", "orthogonal", "balanced", "default")
BALANCED_MODELS = ("linear", "linreg")  # model.init=balanced: deep linear nets only


def _filled(cfg):
    """The model config ``cfg`` (a node or a dict, maybe partial: library use, tests) with every
    key it lacks at the default the run spec declares for its model (``spec.option_defaults``)."""
    given = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.create({**option_defaults("model", given.get("name")), **given})


def check_balanced_widths(shapes: list[tuple[int, int]]) -> int:
    """r = min(outputs, inputs) of factors of shapes ``shapes``; a one-line ConfusionError unless
    every hidden width is at least r (a balanced factorisation of a rank-r W_e needs it)."""
    rank = min(shapes[-1][0], shapes[0][1])
    if any(d_k < rank for d_k, _ in shapes[:-1]):
        raise ConfusionError(f"model.init=balanced needs model.width >= min(inputs, outputs) = "
                             f"{rank}, got {shapes[0][0]}: raise model.width")
    return rank


def balanced_factors(shapes: list[tuple[int, int]], gain: float,
                     generator: torch.Generator) -> list[torch.Tensor]:
    """Exactly balanced factors W_1, ..., W_L (float64) of shapes ``shapes`` = [(d_1, d_0), ...,
    (d_L, d_{L-1})] whose product W_L ... W_1 is one end-to-end matrix W_e.

    The recipe (the balanced initialisation of Arora, Cohen, Golowich and Hu, ICLR 2019, with
    the end-to-end matrix Gaussian):
    1. W_e = gain * G, G_ij ~ N(0, 1 / d_0), of shape (d_L, d_0): the first draw of
       ``generator``, so the same W_e for every depth and width at a given seed and gain;
    2. its reduced SVD W_e = U diag(s) V^T, r = min(d_L, d_0) singular values;
    3. for each hidden width d_k (0 < k < L) a (d_k, r) matrix Q_k with orthonormal columns, the
       Q of the QR decomposition of a Gaussian (d_k, r) matrix (signs fixed by diag(R) > 0: Haar
       distributed), drawn next from ``generator`` for k = 1, ..., L-1; Q_0 = V, Q_L = U;
    4. W_k = Q_k diag(s^(1/L)) Q_{k-1}^T.
    Then W_L ... W_1 = U diag(s) V^T = W_e and W_{k+1}^T W_{k+1} = Q_k diag(s^(2/L)) Q_k^T =
    W_k W_k^T for every k: every factor has the singular values s^(1/L). Needs every hidden
    width d_k >= r (ConfusionError otherwise).
    """
    depth, (n_out, n_in) = len(shapes), (shapes[-1][0], shapes[0][1])
    rank = check_balanced_widths(shapes)
    end_to_end = gain * torch.randn(n_out, n_in, generator=generator, dtype=torch.float64) / math.sqrt(n_in)
    u, s, vh = torch.linalg.svd(end_to_end, full_matrices=False)
    bases = [vh.T]
    for d_k, _ in shapes[:-1]:
        q, r = torch.linalg.qr(torch.randn(d_k, rank, generator=generator, dtype=torch.float64))
        bases.append(q * torch.sign(torch.diagonal(r)))
    bases.append(u)
    root = torch.diag(s.pow(1.0 / depth))
    return [bases[k + 1] @ root @ bases[k].T for k in range(depth)]


def init_weights(model: nn.Module, init: str, activation: str, gain: float = 1.0) -> None:
    """Apply ``init`` to every Linear/Conv2d of ``model`` (see the module docstring).

    ``balanced`` draws from a generator seeded with ``torch.initial_seed()`` (the run's seed:
    Trainer.from_config seeds torch before building), not from torch's global stream, which
    building the layers has advanced by an amount that depends on the depth.
    """
    if init == "default":
        return
    kappa = ACTIVATIONS[activation][1]
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if init == "balanced":
        if any(not isinstance(m, nn.Linear) for m in layers):
            raise ConfusionError("model.init=balanced is for deep linear nets: choose model=linear or linreg")
        shapes = [tuple(m.weight.shape) for m in layers]
        check_balanced_widths(shapes)
        if not layers[0].weight.is_meta:  # meta: shapes only (the memory estimate), nothing drawn
            generator = torch.Generator().manual_seed(torch.initial_seed())
            with torch.no_grad():
                for module, factor in zip(layers, balanced_factors(shapes, gain, generator)):
                    module.weight.copy_(factor)
    for module in layers:
        weight = module.weight
        fan_in = weight[0].numel()
        with torch.no_grad():
            if init == "gaussian":
                weight.normal_(0.0, gain * math.sqrt(1.0 / (kappa * fan_in)))
            elif init == "orthogonal":
                nn.init.orthogonal_(weight, gain=gain)
            if module.bias is not None:
                module.bias.zero_()


class MLP(nn.Sequential):
    """Fully connected net: ``depth`` hidden layers of ``width`` units, then a linear readout."""

    def __init__(self, in_features: int, out_features: int, depth: int, width: int,
                 activation: str = "relu", bias: bool = True):
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width, bias=bias), ACTIVATIONS[activation][0]()]
            fan_in = width
        layers.append(nn.Linear(fan_in, out_features, bias=bias))
        super().__init__(*layers)


class ResidualMLP(nn.Module):
    """The MLP with switchable BN and skips, shaped like CNN-beta-l's pre-activation blocks.

    A first Linear maps the input to ``width`` units; each of the other ``depth - 1`` hidden
    layers is a block h -> Linear(act(BN(h))) (+ h with ``skip``); the readout is
    Linear(act(BN(h))). With neither switch on it computes exactly ``MLP``'s function (the plain
    MLP keeps its own class, so its records and checkpoints are unchanged).
    """

    def __init__(self, in_features: int, out_features: int, depth: int, width: int,
                 activation: str = "relu", bias: bool = True, batch_norm: bool = False,
                 skip: bool = False):
        super().__init__()
        norm = (lambda: nn.BatchNorm1d(width)) if batch_norm else nn.Identity
        self.flatten = nn.Flatten()
        self.stem = nn.Linear(in_features, width, bias=bias and not batch_norm)
        self.norms = nn.ModuleList(norm() for _ in range(depth))
        self.acts = nn.ModuleList(ACTIVATIONS[activation][0]() for _ in range(depth))
        self.layers = nn.ModuleList(nn.Linear(width, width, bias=bias and not batch_norm)
                                    for _ in range(depth - 1))
        self.skip = skip
        self.head = nn.Linear(width, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(self.flatten(x))
        for norm, act, layer in zip(self.norms, self.acts, self.layers):
            out = layer(act(norm(h)))
            h = out + h if self.skip else out
        return self.head(self.acts[-1](self.norms[-1](h)))


class Block(nn.Module):
    """One WideResNet basic block: two 3x3 convs, each optionally preceded by BN (pre-activation).

    With ``skip`` the block adds its input (through a 1x1 strided conv when the shape
    changes, as in WRN); without it the block is a plain stack of two convolutions.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, batch_norm: bool, skip: bool):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in) if batch_norm else nn.Identity()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not batch_norm)
        self.bn2 = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=not batch_norm)
        self.skip = skip
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)
                         if skip and (stride != 1 or c_in != c_out) else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        if not self.skip:
            return out
        return out + (x if self.shortcut is None else self.shortcut(x))


class CNN(nn.Module):
    """CNN-beta-l of the paper: a WideResNet of depth beta = 6n + 4 and width factor l.

    A 3x3 conv with 16 channels, three groups of n blocks with 16l, 32l, 64l channels
    (stride 2 at the start of groups 2 and 3), ReLU, global average pooling, linear readout.
    The paper's CNN-beta-l has ``batch_norm=False, skip=False``; Fig 4 switches them on.
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int, width: int,
                 batch_norm: bool = False, skip: bool = False):
        super().__init__()
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=not batch_norm)
        blocks: list[nn.Module] = []
        c_in = 16
        for group, c_out in enumerate((16 * width, 32 * width, 64 * width)):
            for i in range(n):
                stride = 2 if group > 0 and i == 0 else 1
                blocks.append(Block(c_in, c_out, stride, batch_norm, skip))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in) if batch_norm else nn.Identity()
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.head(out.mean(dim=(2, 3)))


def _mlp(cfg, shape: tuple[int, ...], out: int) -> tuple[nn.Module, str]:
    if cfg.batch_norm or cfg.skip:
        return ResidualMLP(math.prod(shape), out, cfg.depth, cfg.width, cfg.activation, cfg.bias,
                           cfg.batch_norm, cfg.skip), cfg.activation
    return MLP(math.prod(shape), out, cfg.depth, cfg.width, cfg.activation, cfg.bias), cfg.activation


def _linear(cfg, shape: tuple[int, ...], out: int) -> tuple[nn.Module, str]:
    """Deep linear net: depth layers in all, no biases, no activations."""
    return MLP(math.prod(shape), out, cfg.depth - 1, cfg.width, "linear", False), "linear"


def _linreg(cfg, shape: tuple[int, ...], out: int) -> tuple[nn.Module, str]:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), out, bias=cfg.bias)), "linear"


def _cnn(cfg, shape: tuple[int, ...], out: int) -> tuple[nn.Module, str]:
    return CNN(shape[0], out, cfg.depth, cfg.width, cfg.batch_norm, cfg.skip), "relu"


# Every model by name: (its (filled) config, the input shape, outputs) -> (the net, the activation
# its initialisation assumes). Its keys and their defaults: the run spec's dataclass of that name.
MODELS = {"mlp": _mlp, "cnn": _cnn, "linear": _linear, "linreg": _linreg}


# Bounds checked before anything is built: a wider or deeper net than this is a typo here
# (the paper's widest is 2048, its deepest 64), and the memory estimate builds the model's shapes.
WIDTH_MAX = 65536
DEPTH_MAX = 1000


def validate(cfg, input_shape: tuple[int, ...] | None = None) -> None:
    """Raise ConfusionError (one line, with the fix) for an impossible model config."""
    cfg = _filled(cfg)
    name = cfg.get("name")
    if name not in MODELS:
        raise ConfusionError(f"unknown model '{name}': choose one of {', '.join(MODELS)} "
                             "(model=NAME)")
    depth, width = cfg.get("depth"), cfg.get("width")  # linreg has neither
    if name != "linreg":
        if not (is_count(width) and width <= WIDTH_MAX):
            raise ConfusionError(f"model.width must be a positive integer (at most {WIDTH_MAX}), "
                                 f"got {width!r}")
        least = 1 if name == "linear" else 0
        if not (is_count(depth, minimum=least) and depth <= DEPTH_MAX):
            kind = "positive" if least else "non-negative"
            raise ConfusionError(f"model.depth must be a {kind} integer (at most {DEPTH_MAX}), "
                                 f"got {depth!r}")
    if name == "mlp" and (cfg.batch_norm or cfg.skip) and depth < 1:
        raise ConfusionError("model.batch_norm / model.skip need model.depth >= 1 hidden layers, "
                             f"got {depth}")
    if name == "cnn":
        if depth < 10 or (depth - 4) % 6:
            raise ConfusionError(f"model.depth={depth} is not a WideResNet depth: CNN-beta-l needs "
                                 "beta = 6n + 4 with n >= 1 (10, 16, 22, 28, 34, 40, ...)")
        if input_shape is not None and len(input_shape) != 3:
            raise ConfusionError(f"model=cnn needs image data (C,H,W), got inputs of shape "
                                 f"{tuple(input_shape)}: use model=mlp for vector data")
    activation = cfg.get("activation", "relu")  # the CNN's is ReLU, not a key
    if activation not in ACTIVATIONS:
        raise ConfusionError(f"unknown model.activation '{activation}': choose one of "
                             f"{', '.join(ACTIVATIONS)}")
    init = cfg.init
    if init not in INITS:
        raise ConfusionError(f"unknown model.init '{init}': choose one of {', '.join(INITS)}")
    if init == "balanced" and name not in BALANCED_MODELS:
        raise ConfusionError(f"model.init=balanced is for deep linear nets (model=linear or linreg), "
                             f"got model={name}: choose gaussian, orthogonal or default")
    gain = cfg.init_gain
    if not (is_number(gain) and math.isfinite(gain) and gain > 0):
        raise ConfusionError(f"model.init_gain must be a finite positive number, got {gain!r}")


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build and initialise the model named by ``cfg.name`` for inputs of ``input_shape``.

    ``num_classes`` = 0 means a scalar regression output.
    """
    validate(cfg, input_shape)
    cfg = _filled(cfg)
    model, activation = MODELS[cfg.name](cfg, tuple(input_shape), max(num_classes, 1))
    init_weights(model, cfg.init, activation, cfg.init_gain)
    return model

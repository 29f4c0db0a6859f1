"""The sweep figures by sweep name, and which sweeps a set of records holds.

``FIGURES`` maps a sweep name to the functions drawing its figures, each ``(per-epoch records of
that sweep, out directory) -> paths written``; a module adds one with the decorator
``@register("lowrank")`` (or ``register(name)(partial(function, ...))`` for one function drawn
for several sweeps). A sweep may have several figures (``fig2_depth`` and ``conf_vs_loss_depth``):
each is drawn, and fails, on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .select import varying_columns

FigureFunction = Callable[[pd.DataFrame, Path], list[Path]]
FIGURES: dict[str, list[FigureFunction]] = {}


class FigureWarning(UserWarning):
    """A figure that could not be drawn; the others still are."""


def register(*sweeps: str) -> Callable[[FigureFunction], FigureFunction]:
    """Decorator: draw ``function(records of the sweep, out)`` for each sweep name in ``plot_all``,
    besides the figures registered for it before."""
    def add(function: FigureFunction) -> FigureFunction:
        for sweep in sweeps:
            FIGURES[sweep] = [*FIGURES.get(sweep, []), function]
        return function
    return add


def draw(sweep: str, frame: pd.DataFrame, out: Path) -> list[Path]:
    """Every figure registered for ``sweep`` drawn from ``frame``: the paths written."""
    return [path for function in FIGURES.get(sweep, []) for path in function(frame, out)]


def figure_name(function: FigureFunction) -> str:
    """A figure function's name for a warning: its own, or that of the function it partially applies."""
    inner = getattr(function, "func", function)
    stem = getattr(function, "keywords", {}).get("stem")
    return stem or getattr(inner, "__name__", repr(inner))


FALLBACK_SWEEPS = {"model.depth": "depth", "model.width": "width", "dataset.dim": "linreg"}


def infer_sweep(frame: pd.DataFrame) -> str | None:
    """The paper sweep that runs outside a named sweep amount to, from what varies among them
    (besides LR and seed): model.depth -> depth (depth_mnist for MLPs), model.width -> width,
    dataset.dim -> linreg, BN / skip (and depth) -> bn_skip; None otherwise."""
    vary = set(varying_columns(frame, exclude=("optim.lr",)))
    if len(vary) == 1 and (name := FALLBACK_SWEEPS.get(vary.pop())):
        mlp = name != "linreg" and (frame["model.name"] == "mlp").all()
        return f"{name}_mnist" if mlp else name
    bn_skip = {"model.batch_norm", "model.skip"}
    return "bn_skip" if vary & bn_skip and vary <= bn_skip | {"model.depth"} else None


def sweeps(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The records of every sweep present, by ``sweep.name``; runs outside a sweep ('single')
    count as the sweep ``infer_sweep`` recognises in them."""
    names = frame.get("sweep.name", pd.Series(None, frame.index, dtype=object)).fillna("single")
    found = {name: part for name, part in frame.groupby(names)}
    single = found.pop("single", None)
    if single is not None and (name := infer_sweep(single)):
        found[name] = pd.concat([found[name], single]) if name in found else single
    return found

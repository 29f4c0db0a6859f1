"""Claims as declared data: one YAML file per claim, fixed before the runs it is decided on.

A claim names the sweep whose records it reads, the config equalities every run must satisfy
(``where``), how each arm's initial LR is taken (``lr``), its arms (named architectures, as
config equalities) and its comparisons, each with the points, statistic, test and expected sign
decided in advance. Every mistake is one ConfusionError naming the file and the key::

    name: fig2_depth_fmnist          # unique id
    paper: "Fig 2"                   # which figure or claim of the paper
    statement: "deeper plain nets train slower and are more confused"
    declared: "2026-12-02, before the 5-seed runs"   # when and why it was fixed
    sweep: depth_fmnist              # sweep.name of the records it reads
    where: {dataset.name: fashion_mnist}            # optional; config equalities for every run
    lr: select                       # select | fixed | all
    arms: {shallow: {model.depth: 2}, deep: {model.depth: 32}}
    comparisons:
      - kind: contrast               # mean(first arm) - mean(second arm)
        arms: [deep, shallow]
        statistic: train_loss        # a metrics column, or eta / ex_eta (from *min_inner)
        estimator: "training loss, full training set"
        expect: greater              # greater | less: the expected sign of the effect
        at: {epochs: [1, 5, final], loss_levels: [1.0, 0.6], steps: [100]}
        test: paired                 # paired (by seed) | welch | bootstrap
        probe_se: 0.05               # optional: the estimator's own standard error
      - kind: slope                  # OLS of y on x across runs
        y: {statistic: train_loss, aggregate: mean_last, last: 5}
        x: {product: [optim.lr, {statistic: eta, aggregate: final}]}
        log: false                   # optional: log y on log x
        expect: greater
        estimator: "..."
        arms: [deep, shallow]        # optional: the runs of these arms (default: every arm)

``lr``: ``select`` takes, per arm over all its seeds, the initial LR of the figures
(``figures.select.select_lr``: lowest mean final training loss, never an LR at which a seed
diverged); ``fixed`` takes the ``optim.lr`` each arm (or ``where``) fixes; ``all`` takes the runs
at every LR, for slopes across LRs (a contrast needs one LR per arm).
A per-run aggregate is ``mean_last`` (the mean over the last ``last`` events with the
statistic), ``final`` (the last such event) or ``at_epoch`` (the row at whole epoch ``epoch``).
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfusionError, is_count

LR_RULES = ("select", "fixed", "all")
EXPECT = ("greater", "less")
TESTS = ("paired", "welch", "bootstrap")
AGGREGATES = ("mean_last", "final", "at_epoch")
POINT_KEYS = {"epochs": "epoch", "steps": "step", "loss_levels": "loss"}
CLAIM_KEYS = ("name", "paper", "statement", "declared", "sweep", "where", "lr", "arms", "comparisons")
CONTRAST_KEYS = ("kind", "arms", "statistic", "estimator", "expect", "at", "test", "probe_se")
SLOPE_KEYS = ("kind", "y", "x", "log", "expect", "estimator", "arms", "probe_se")
TERM_KEYS = ("statistic", "aggregate", "last", "epoch")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
Scalar = str | int | float | bool | None


def shipped_folder() -> Path:
    """The claims that come with the package: ``confusion_cli/configs/claims``."""
    return Path(str(resources.files("confusion_cli") / "configs" / "claims"))


# -- the parsed claim ------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """Where a contrast is read: ``epoch`` (a whole epoch or ``"final"``), ``step`` or ``loss``
    (the first probe event at or below that training loss)."""

    kind: str
    value: Any

    def label(self) -> str:
        if self.value == "final":
            return "final"
        return {"epoch": f"epoch {self.value}", "step": f"step {self.value}",
                "loss": f"loss <= {self.value:g}"}[self.kind]


@dataclass(frozen=True)
class Term:
    """One factor of a slope's x or y: a config column, or a statistic aggregated per run."""

    column: str | None = None
    statistic: str | None = None
    aggregate: str | None = None
    last: int | None = None
    epoch: int | None = None

    def label(self) -> str:
        if self.column is not None:
            return self.column
        how = {"mean_last": f"mean of last {self.last}", "final": "final",
               "at_epoch": f"epoch {self.epoch}"}[self.aggregate]
        return f"{self.statistic} ({how})"


@dataclass(frozen=True)
class Contrast:
    """mean(arms[0]) - mean(arms[1]) of ``statistic`` at every point, by ``test``."""

    key: str  # "comparisons[0]", for messages
    arms: tuple[str, str]
    statistic: str
    estimator: str
    expect: str
    points: tuple[Point, ...]
    test: str
    probe_se: float | None = None


@dataclass(frozen=True)
class Slope:
    """The OLS slope across runs of y on x, each a product of terms."""

    key: str
    y: tuple[Term, ...]
    x: tuple[Term, ...]
    log: bool
    expect: str
    estimator: str
    arms: tuple[str, ...]
    probe_se: float | None = None


@dataclass(frozen=True)
class Claim:
    name: str
    paper: str
    statement: str
    declared: str
    sweep: str
    where: dict[str, Scalar]
    lr: str
    arms: dict[str, dict[str, Scalar]]
    comparisons: tuple[Contrast | Slope, ...]
    source: Path = field(default=Path("<claim>"), compare=False)

    def equalities(self, arm: str) -> dict[str, Scalar]:
        """The config equalities of one arm's runs: ``where`` and the arm's own."""
        return {**self.where, **self.arms[arm]}


# -- loading ---------------------------------------------------------------------------------
def claim_files(paths: Iterable[str | os.PathLike] | str | os.PathLike | None = None) -> list[Path]:
    """The claim files of ``paths`` (files, or folders whose ``*.yaml``/``*.yml`` files count,
    sorted), each once; the shipped claims when ``paths`` is None."""
    if paths is None:
        paths = [shipped_folder()]
    elif isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise ConfusionError(f"no claim files (*.yaml) in {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfusionError(f"no such claims file or folder: {path}")
    unique = {p.resolve(): p for p in reversed(files)}
    return [p for p in files if unique[p.resolve()] is p]


def load_claims(paths: Iterable[str | os.PathLike] | str | os.PathLike | None = None) -> list[Claim]:
    """Every claim in ``paths`` (see ``claim_files``), checked; names must be unique."""
    claims: list[Claim] = []
    seen: dict[str, Path] = {}
    for path in claim_files(paths):
        claim = read_claim(path)
        if claim.name in seen:
            _fail(path, "name", f"'{claim.name}' is also the name of the claim in {seen[claim.name]}")
        seen[claim.name] = path
        claims.append(claim)
    return claims


def read_claim(path: str | os.PathLike) -> Claim:
    """One claim file, checked (a one-line ConfusionError naming the file and key)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfusionError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfusionError(f"{path}: not valid YAML ({problem}{where})") from None
    return parse_claim(data, path)


def parse_claim(data: Any, source: Path = Path("<claim>")) -> Claim:
    """A claim from its parsed YAML ``data``, checked."""
    if not isinstance(data, dict):
        raise ConfusionError(f"{source}: a claim file holds one mapping (name, paper, statement, ...)")
    check = Checker(source)
    check.keys("", data, CLAIM_KEYS, required=[k for k in CLAIM_KEYS if k != "where"])
    name = check.text("name", data["name"])
    if not NAME.fullmatch(name):
        check.fail("name", f"'{name}' is not a plain name (letters, digits, _ . -)")
    where = check.equalities("where", data.get("where") or {})
    lr = check.choice("lr", data["lr"], LR_RULES)
    arms = data["arms"]
    if not isinstance(arms, dict) or not arms:
        check.fail("arms", "must map arm names to config equalities, e.g. {deep: {model.depth: 32}}")
    for arm in arms:
        if not isinstance(arm, str) or not NAME.fullmatch(arm):
            check.fail(f"arms.{arm}", "an arm's name is a plain name (letters, digits, _ . -)")
    arms = {arm: check.equalities(f"arms.{arm}", eqs or {}) for arm, eqs in arms.items()}
    for arm, eqs in arms.items():
        if "seed" in eqs:
            check.fail(f"arms.{arm}.seed", "arms are paired by seed; an arm cannot fix it")
        lr_key = f"arms.{arm}.optim.lr" if "optim.lr" in eqs else "where.optim.lr"
        fixed = "optim.lr" in eqs or "optim.lr" in where
        if lr == "select" and fixed:
            check.fail(lr_key, "lr: select chooses optim.lr; remove it or use lr: fixed")
        if lr == "fixed" and not fixed:
            check.fail(f"arms.{arm}", "lr: fixed needs optim.lr in every arm (or in where)")
    comparisons = data["comparisons"]
    if not isinstance(comparisons, list) or not comparisons:
        check.fail("comparisons", "must be a non-empty list")
    parsed = tuple(check.comparison(f"comparisons[{i}]", c, arms, lr) for i, c in enumerate(comparisons))
    return Claim(name=name, paper=check.text("paper", data["paper"]),
                 statement=check.text("statement", data["statement"]),
                 declared=check.text("declared", data["declared"]),
                 sweep=check.text("sweep", data["sweep"]), where=where, lr=lr, arms=arms,
                 comparisons=parsed, source=source)


class Checker:
    """The checks of one claim file; every failure names the file and the key."""

    def __init__(self, source: Path):
        self.source = source

    def fail(self, key: str, message: str):
        raise ConfusionError(f"{self.source}: {key}: {message}")

    def keys(self, key: str, data: Any, allowed: Iterable[str], required: Iterable[str]) -> None:
        allowed = list(allowed)
        if not isinstance(data, dict):
            self.fail(key, f"must be a mapping with keys {', '.join(allowed)}")
        prefix = f"{key}." if key else ""
        for name in data:
            if name not in allowed:
                near = difflib.get_close_matches(str(name), allowed, n=1)
                hint = f"did you mean '{near[0]}'?" if near else f"allowed: {', '.join(allowed)}"
                self.fail(f"{prefix}{name}", f"unknown key ({hint})")
        for name in required:
            if name not in data:
                self.fail(f"{prefix}{name}", "missing")

    def text(self, key: str, value: Any) -> str:
        if isinstance(value, (datetime.date, datetime.datetime)):  # `declared: 2026-12-02`
            value = value.isoformat()
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "must be a non-empty string")
        return value.strip()

    def choice(self, key: str, value: Any, choices: tuple[str, ...]) -> str:
        if value not in choices:
            self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def number(self, key: str, value: Any, minimum: float = 0.0, strict: bool = False) -> float:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or value != value or value < minimum or (strict and value == minimum)):
            bound = ">" if strict else ">="
            self.fail(key, f"{value!r} is not a number {bound} {minimum:g}")
        return float(value)

    def count(self, key: str, value: Any, minimum: int) -> int:
        if not is_count(value, minimum):
            self.fail(key, f"{value!r} is not a whole number >= {minimum}")
        return value

    def equalities(self, key: str, value: Any) -> dict[str, Scalar]:
        if not isinstance(value, dict):
            self.fail(key, "must map config columns to values, e.g. {model.depth: 32}")
        for column, v in value.items():
            if not isinstance(column, str) or not column:
                self.fail(key, f"{column!r} is not a config column name")
            if not (v is None or isinstance(v, (str, int, float, bool))):
                self.fail(f"{key}.{column}", f"{v!r} is not a plain value (string, number, bool)")
        return dict(value)

    def arm_names(self, key: str, value: Any, arms: dict, exactly: int | None) -> tuple[str, ...]:
        if not isinstance(value, list) or (exactly is not None and len(value) != exactly) or not value:
            self.fail(key, f"must be a list of {exactly or 'one or more'} arm names")
        for arm in value:
            if arm not in arms:
                self.fail(key, f"'{arm}' is no arm of this claim ({', '.join(arms)})")
        if len(set(value)) != len(value):
            self.fail(key, "names an arm twice")
        return tuple(value)

    def comparison(self, key: str, data: Any, arms: dict, lr: str) -> Contrast | Slope:
        if not isinstance(data, dict) or "kind" not in data:
            self.fail(key, "must be a mapping with kind: contrast or kind: slope")
        kind = self.choice(f"{key}.kind", data["kind"], ("contrast", "slope"))
        probe_se = data.get("probe_se")
        if probe_se is not None:
            probe_se = self.number(f"{key}.probe_se", probe_se)
        if kind == "contrast":
            self.keys(key, data, CONTRAST_KEYS, required=[k for k in CONTRAST_KEYS if k != "probe_se"])
            if lr == "all":
                self.fail(f"{key}.kind", "a contrast needs one LR per arm: use lr: select or fixed")
            return Contrast(key=key, arms=self.arm_names(f"{key}.arms", data["arms"], arms, 2),
                            statistic=self.text(f"{key}.statistic", data["statistic"]),
                            estimator=self.text(f"{key}.estimator", data["estimator"]),
                            expect=self.choice(f"{key}.expect", data["expect"], EXPECT),
                            points=self.points(f"{key}.at", data["at"]),
                            test=self.choice(f"{key}.test", data["test"], TESTS), probe_se=probe_se)
        self.keys(key, data, SLOPE_KEYS, required=("kind", "y", "x", "expect", "estimator"))
        log = data.get("log", False)
        if not isinstance(log, bool):
            self.fail(f"{key}.log", f"{log!r} is not true or false")
        chosen = (self.arm_names(f"{key}.arms", data["arms"], arms, None) if "arms" in data
                  else tuple(arms))
        return Slope(key=key, y=self.quantity(f"{key}.y", data["y"]),
                     x=self.quantity(f"{key}.x", data["x"]), log=log,
                     expect=self.choice(f"{key}.expect", data["expect"], EXPECT),
                     estimator=self.text(f"{key}.estimator", data["estimator"]), arms=chosen,
                     probe_se=probe_se)

    def points(self, key: str, data: Any) -> tuple[Point, ...]:
        self.keys(key, data, POINT_KEYS, required=())
        points: list[Point] = []
        for name, values in data.items():
            if not isinstance(values, list) or not values:
                self.fail(f"{key}.{name}", "must be a non-empty list")
            for i, value in enumerate(values):
                where = f"{key}.{name}[{i}]"
                if name == "loss_levels":
                    value = self.number(where, value, strict=True)
                elif not (name == "epochs" and value == "final"):
                    value = self.count(where, value, 0)
                points.append(Point(POINT_KEYS[name], value))
        if not points:
            self.fail(key, "needs epochs, steps or loss_levels")
        return tuple(points)

    def quantity(self, key: str, data: Any) -> tuple[Term, ...]:
        """A product of terms: ``{product: [term, ...]}`` or one term."""
        if isinstance(data, dict) and "product" in data:
            self.keys(key, data, ("product",), required=("product",))
            if not isinstance(data["product"], list) or not data["product"]:
                self.fail(f"{key}.product", "must be a non-empty list of terms")
            return tuple(self.term(f"{key}.product[{i}]", t) for i, t in enumerate(data["product"]))
        return (self.term(key, data),)

    def term(self, key: str, data: Any) -> Term:
        """A config column (``optim.lr``) or ``{statistic, aggregate, last | epoch}``."""
        if isinstance(data, str):
            return Term(column=self.text(key, data))
        self.keys(key, data, TERM_KEYS, required=("statistic", "aggregate"))
        aggregate = self.choice(f"{key}.aggregate", data["aggregate"], AGGREGATES)
        need = {"mean_last": "last", "at_epoch": "epoch"}.get(aggregate)
        for extra in ("last", "epoch"):
            if extra in data and extra != need:
                self.fail(f"{key}.{extra}", f"aggregate: {aggregate} takes no {extra}")
        if need is not None and need not in data:
            self.fail(f"{key}.{need}", f"missing (aggregate: {aggregate} needs it)")
        return Term(statistic=self.text(f"{key}.statistic", data["statistic"]), aggregate=aggregate,
                    last=self.count(f"{key}.last", data["last"], 1) if need == "last" else None,
                    epoch=self.count(f"{key}.epoch", data["epoch"], 0) if need == "epoch" else None)


def _fail(source: Path, key: str, message: str):
    Checker(source).fail(key, message)

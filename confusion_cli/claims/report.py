"""The records claims are decided from, and the table of decided claims: printed, and written
as ``claims.md`` and ``claims.csv``."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .. import records
from .schema import Claim

# (header, column of ``decide``'s frame): what the printed and markdown tables show; the CSV
# has every column (the interval as ci_low and ci_high, the test used, r of a slope, ...).
TABLE = (("claim", "claim"), ("paper", "paper"), ("comparison", "comparison"),
         ("estimator", "estimator"), ("effect", "effect"), ("95% CI", "ci_low"), ("g", "g"),
         ("n", "n"), ("probe SE", "probe_se"), ("verdict", "verdict"), ("note", "note"))
VERDICTS = ("observed: the 95% interval excludes 0 on the expected side; not observed: it "
            "excludes 0 on the other side; inconclusive: it spans 0, or there is none (the note "
            "says why)")


def read_records(roots: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The records under every directory of ``roots`` (``records.require_records``: a
    ConfusionError for a missing or empty one), each run once even where directories overlap."""
    seen: set[str] = set()
    parts = []
    for root in dict.fromkeys(map(str, roots)):
        part = records.require_records(root)
        real = part["run_dir"].map(os.path.realpath)
        parts.append(part[~real.isin(seen)])
        seen |= set(real)
    return pd.concat(parts, ignore_index=True)


def number(value: float) -> str:
    """3 significant digits; '' for NaN."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def cells(row: pd.Series) -> list[str]:
    out = []
    for header, column in TABLE:
        if header == "95% CI":
            low, high = row["ci_low"], row["ci_high"]
            out.append("" if math.isnan(low) else f"[{number(low)}, {number(high)}]")
        elif header == "g":
            out.append("" if math.isnan(row["g"]) else f"{row['g']:.2f}")
        elif column in ("effect", "probe_se"):
            out.append(number(row[column]))
        else:
            out.append(str(row[column]))
    return out


def shown(source: Path) -> str:
    """A claim file as a reader can find it: inside the package as ``confusion_cli/...``,
    elsewhere relative to the working directory when below it, else as given."""
    source = Path(source).resolve()
    package = Path(__file__).resolve().parent.parent
    for base, prefix in ((package, "confusion_cli/"), (Path.cwd().resolve(), "")):
        if source.is_relative_to(base):
            return prefix + source.relative_to(base).as_posix()
    return str(source)


def markdown_table(table: pd.DataFrame) -> str:
    """The rows of ``decide`` as one markdown table (the columns of ``TABLE``)."""
    lines = ["| " + " | ".join(header for header, _ in TABLE) + " |", "|" + "---|" * len(TABLE)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(row)) + " |"
              for _, row in table.iterrows()]
    return "\n".join(lines)


def markdown(table: pd.DataFrame, claims: Sequence[Claim], runs: Sequence[str | os.PathLike]) -> str:
    """``claims.md``: the table, then every claim as it was declared."""
    decided = set(table["claim"])
    lines = ["# Claims decided from the records", "",
             f"Records: {', '.join(map(str, runs))}. {VERDICTS}.", "", markdown_table(table), "",
             "## The claims, as declared", ""]
    for claim in claims:
        status = "" if claim.name in decided else f" No records for sweep {claim.sweep}."
        statement, declared = claim.statement.rstrip("."), claim.declared.rstrip(".")
        lines.append(f"- **{claim.name}** ({claim.paper}; sweep {claim.sweep}, lr {claim.lr}; "
                     f"{shown(claim.source)}): {statement}. Declared: {declared}.{status}")
    return "\n".join(lines) + "\n"


def write_report(table: pd.DataFrame, claims: Sequence[Claim], runs: Sequence[str | os.PathLike],
                 out: str | os.PathLike) -> list[Path]:
    """``out/claims.md`` and ``out/claims.csv`` (every column of ``table``), each written
    atomically; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(table, claims, runs)
    records.atomic_write(out / "claims.md", lambda f: f.write(text))
    records.write_csv(out / "claims.csv", table)
    return [out / "claims.md", out / "claims.csv"]

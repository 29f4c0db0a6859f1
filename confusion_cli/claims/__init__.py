"""Claims: each claim of the paper decided from the run records, from claims declared as data
before the runs (``configs/claims/*.yaml``; the schema is in ``schema``).

``schema`` reads and checks claim files (``load_claims``); ``decide`` picks each arm's runs
(the figures' LR rule), reads a statistic per run at the declared points and gives the effect,
its 95% interval (``intervals``: paired or Welch t, BCa bootstrap, OLS slope), Hedges' g and the
verdict; ``report`` prints the table and writes ``claims.md`` and ``claims.csv``.
``confusion claims RUNS_DIR`` runs the three.
"""

from .decide import COLUMNS, ClaimWarning, decide
from .report import markdown_table, read_records, write_report
from .schema import (
    Claim,
    Contrast,
    Point,
    Slope,
    Term,
    claim_files,
    load_claims,
    parse_claim,
    read_claim,
    shipped_folder,
)

__all__ = ["COLUMNS", "Claim", "ClaimWarning", "Contrast", "Point", "Slope", "Term", "claim_files",
           "decide", "load_claims", "markdown_table", "parse_claim", "read_claim", "read_records",
           "shipped_folder", "write_report"]

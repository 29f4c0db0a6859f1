"""Records: one directory per run, from its creation to its reading.

``layout`` names every file and builds every path; ``safe`` opens them (no links, regular files
of the current user, size caps) and makes folders without following links; ``writer`` writes
(atomically, never through a link) and ``RunRecorder`` fills a run directory; ``checkpoint``
reads a checkpoint without running code; ``lock`` claims a config and chooses its directory;
``liveness`` tells a live run from an interrupted one; ``hashing`` says which runs are the same;
``sweep`` keeps a sweep's plan and progress; ``reader`` vets every run it reads (``vet``) and
loads many runs into one DataFrame (``load``) for figures and users.
"""

from .checkpoint import read_checkpoint, resume_problem, warn
from .hashing import config_hash, semantic_config
from .layout import (
    CHECKPOINT,
    CONFIG,
    ERROR,
    FINISHED,
    LOCK,
    METRICS,
    RUN_JSON,
    RUN_LOG,
    SAMPLES,
    UNFINISHED,
    RecordWarning,
    run_folder,
    samples_path,
)
from .liveness import INTERRUPTED, live_status, run_is_live
from .lock import check_new_dir, check_run_folder, choose_run_dir, claim_lock, run_lock
from .lock import holder_text as lock_holder_text
from .provenance import provenance
from .reader import (
    distrust,
    find_runs,
    flatten,
    legacy_rows,
    load,
    load_samples,
    read_config,
    read_run_json,
    read_samples_file,
    require_records,
    run_dirs,
    vet,
    vetted,
)
from .safe import DiskFull, UnsafeRecord, make_dir
from .sweep import (
    check_sweep_folder,
    finished_count,
    mark_finished,
    plan_overrides,
    planned_grid,
    planned_total,
    previous_launch,
    read_plan,
    swept_label,
    write_plan,
)
from .writer import RunRecorder, append_line, atomic_write, segment_meta, write_config, write_csv, write_json

__all__ = ["CHECKPOINT", "CONFIG", "ERROR", "FINISHED", "LOCK", "INTERRUPTED", "METRICS", "RUN_JSON",
           "RUN_LOG",
           "SAMPLES", "UNFINISHED", "RecordWarning", "live_status", "run_is_live", "RunRecorder",
           "append_line", "atomic_write", "check_new_dir", "check_run_folder",
           "check_sweep_folder", "choose_run_dir", "plan_overrides", "read_plan", "lock_holder_text",
           "distrust", "legacy_rows", "write_config",
           "claim_lock", "config_hash", "find_runs", "flatten", "load", "load_samples",
           "mark_finished", "finished_count", "previous_launch", "planned_grid", "planned_total",
           "swept_label", "provenance",
           "read_checkpoint", "resume_problem", "warn", "DiskFull",
           "read_config", "read_run_json", "UnsafeRecord", "make_dir", "vet", "vetted",
           "read_samples_file", "require_records", "run_dirs", "run_folder", "run_lock", "samples_path",
           "segment_meta", "semantic_config", "write_csv", "write_json", "write_plan"]

"""`make wheelhouse`: the wheels a torch-equipped GPU node without internet lacks, in one folder.

A cluster node typically has a system Python with torch, torchvision, numpy, pandas, matplotlib
and pytest (NODE_PACKAGES) and no package index. This folder holds the project's own wheel and
the pure-Python packages it needs beyond those (OFFLINE_PACKAGES), at the versions installed in
the environment that builds it, so the node runs what was tested here:
antlr4-python3-runtime (sdist only on PyPI: built into a wheel here) and PyYAML (built from its
sdist without libyaml: a pure-Python wheel for any Python 3) included. Every wheel is
``py3-none-any``. On the node, one command installs exactly these wheels and nothing else:

    python3 -m pip install --no-index --no-deps --target DIR WHEELHOUSE/*.whl

then ``PYTHONPATH=DIR python3 -m confusion_cli.gpu_check`` (README, "GPU nodes without internet").
Building needs the package registry (pip wheel); installing needs nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PROJECT = "confusion"
ROOT = Path(__file__).resolve().parent.parent  # the project's tree (pyproject.toml)
# what the node is assumed to have (binary wheels matched to its CUDA): gpu_check checks them
NODE_PACKAGES = ("torch", "torchvision", "numpy", "pandas", "matplotlib", "pytest")
# what it lacks: the project's pure-Python requirements (and theirs) beyond NODE_PACKAGES and
# their own dependencies (packaging, typing_extensions, ...); scipy is left out (binary, used by
# `confusion claims` only), and so is tqdm: progress.py imports it only to draw live lines on a
# terminal, and draws a hand-written line without it (off a terminal, as in gpu_check's stages,
# nothing imports it; tests/test_progress.py runs both without tqdm)
OFFLINE_PACKAGES = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "hydra-joblib-launcher",
                    "hydra-submitit-launcher", "submitit", "joblib", "cloudpickle", "PyYAML")
FROM_SDIST = ("antlr4-python3-runtime", "PyYAML")  # built here into py3-none-any wheels


def install_command(wheelhouse: str | Path, target: str | Path, python: str = "python3") -> list[str]:
    """The node's one install command: exactly the wheelhouse's wheels into ``target``, no index,
    no dependency resolution (so torch and numpy are never touched)."""
    wheels = sorted(str(p) for p in Path(wheelhouse).glob("*.whl"))
    return [python, "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(target), *wheels]


def pins() -> list[str]:
    """NAME==VERSION of every OFFLINE_PACKAGES entry as installed here."""
    return [f"{name}=={metadata.version(name)}" for name in OFFLINE_PACKAGES]


def build(out: Path) -> list[Path]:
    """The wheelhouse in ``out`` (its old wheels removed first); the wheels, sorted."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    env = {**os.environ, "PYYAML_FORCE_LIBYAML": "0"}  # PyYAML's pure-Python build
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out),
                    "--no-binary", ",".join(FROM_SDIST), str(ROOT), *pins()], check=True, env=env)
    wheels = sorted(out.glob("*.whl"))
    binary = [w.name for w in wheels if not w.name.endswith("-py3-none-any.whl")]
    if binary:
        raise SystemExit(f"error: wheels tied to this machine in {out}: {', '.join(binary)}")
    return wheels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m confusion_cli.wheelhouse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "wheelhouse"))
    args = parser.parse_args(argv)
    wheels = build(Path(args.out))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"wheelhouse: {len(wheels)} wheels, {size:.1f} MiB in {args.out}")
    print(f"on the node: python3 -m pip install --no-index --no-deps --target DIR {args.out}/*.whl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

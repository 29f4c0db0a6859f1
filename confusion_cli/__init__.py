"""confusion: gradient confusion and SGD, the experiment runner.

De, Sankararaman, Xu, Huang, Goldstein, "The Impact of Neural Network
Overparameterization on Gradient Confusion and Stochastic Gradient Descent", ICML 2020.
"""

__version__ = "0.1.0"

try:  # registers the configs' ${confusion.data_dir:}; without omegaconf (an offline GPU node
    # before its wheelhouse is installed) the package still imports, so gpu_check can say so
    from . import paths  # noqa: E402, F401
except ModuleNotFoundError as exc:  # pragma: no cover - exercised by gpu_check on a bare node
    if exc.name != "omegaconf":
        raise

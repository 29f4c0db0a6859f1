"""confusion: gradient confusion and SGD, the experiment runner.

De, Sankararaman, Xu, Huang, Goldstein, "The Impact of Neural Network
Overparameterization on Gradient Confusion and Stochastic Gradient Descent", ICML 2020.
"""

__version__ = "0.1.0"

from . import paths  # noqa: E402, F401  (registers the configs' ${confusion.data_dir:})

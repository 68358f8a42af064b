"""tfopt: write, run and compare gradient-based optimizers in TensorFlow."""

from tfopt.adam import Adam
from tfopt.gradient_descent import GradientDescent
from tfopt.momentum import Momentum
from tfopt.optimizer import Optimizer

RULES = {cls.__name__: cls for cls in (GradientDescent, Momentum, Adam)}
"""The tfopt optimizer classes by name (``as_keras`` and saved models look rules up here)."""

from tfopt import problems  # noqa: E402
from tfopt.harness import BatchResult, ConvergenceResult, convergence_test  # noqa: E402
from tfopt.keras_optimizer import KerasOptimizer  # noqa: E402  (registers it for .keras loading)

__version__ = "0.1.0"
__all__ = [
    "Adam", "BatchResult", "ConvergenceResult", "GradientDescent", "KerasOptimizer", "Momentum", "Optimizer",
    "RULES", "__version__", "convergence_test", "problems",
]

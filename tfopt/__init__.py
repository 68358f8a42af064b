"""tfopt: write, run and compare gradient-based optimizers in TensorFlow."""

from tfopt.adam import Adam
from tfopt.gradient_descent import GradientDescent
from tfopt.momentum import Momentum
from tfopt.optimizer import Optimizer

__version__ = "0.1.0"
__all__ = ["Adam", "GradientDescent", "Momentum", "Optimizer", "__version__"]

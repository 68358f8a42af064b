"""Rules written the way users write them, in a module of their own, for tests/test_testing.py.

``RMSprop`` and ``make_rmsprop`` are correct; the others each carry one bug users really write (the first
two are the TensorFlow guide's, "Optimizers with Core APIs"), and the conformance kit must name it.
"""

import tensorflow as tf

import tfopt


class RMSprop(tfopt.Optimizer):
    """v <- rho*v + (1-rho)*g^2;  x <- x - lr * g / (sqrt(v) + eps)"""

    slot_names = ("v",)
    rho = tfopt.Hyperparameter(0.9, check=tfopt.checks.unit_interval)
    epsilon = tfopt.Hyperparameter(1e-7, check=tfopt.checks.non_negative)

    def update(self, grad, slots, *, learning_rate, rho, epsilon, **_):
        v = rho * slots["v"] + (1 - rho) * tf.square(grad)
        return learning_rate * grad / (tf.sqrt(v) + epsilon), {"v": v}


def make_rmsprop():
    """A module-level factory (importable by a subprocess, unlike a lambda)."""
    return RMSprop(0.01, rho=0.8)


class SharedChangeMomentum(tfopt.Optimizer):
    """The guide's Momentum: ONE ``change`` for all variables, kept in a Python attribute."""

    momentum = tfopt.Hyperparameter(0.7, check=tfopt.checks.unit_interval)
    change = 0.0

    def update(self, grad, slots, *, learning_rate, momentum, **_):
        change = learning_rate * grad + momentum * self.change
        self.change = change
        return change, {}


class _AdamMath(tfopt.Optimizer):
    beta_1 = tfopt.Hyperparameter(0.9, check=tfopt.checks.unit_interval)
    beta_2 = tfopt.Hyperparameter(0.999, check=tfopt.checks.unit_interval)
    epsilon = tfopt.Hyperparameter(1e-7, check=tfopt.checks.non_negative)

    @staticmethod
    def direction(grad, m, v, t, beta_1, beta_2, epsilon):
        m = beta_1 * m + (1 - beta_1) * grad
        v = beta_2 * v + (1 - beta_2) * tf.square(grad)
        m_hat, v_hat = m / (1 - beta_1**t), v / (1 - beta_2**t)
        return m_hat / (tf.sqrt(v_hat) + epsilon), m, v


class PythonStepAdam(_AdamMath):
    """The guide's Adam: the step counter ``t`` is a Python float, incremented in ``update`` (once per variable)."""

    slot_names = ("m", "v")
    t = 1.0

    def update(self, grad, slots, *, learning_rate, beta_1, beta_2, epsilon, **_):
        direction, m, v = self.direction(grad, slots["m"], slots["v"], self.t, beta_1, beta_2, epsilon)
        self.t += 1.0
        return learning_rate * direction, {"m": m, "v": v}


class PerStepPythonCounterAdam(_AdamMath):
    """``t`` a Python counter incremented once per step (in ``step_values``): right eagerly, wrong elsewhere."""

    slot_names = ("m", "v")
    t = 0.0

    def step_values(self, **_):
        self.t += 1.0
        return {}

    def update(self, grad, slots, *, learning_rate, beta_1, beta_2, epsilon, **_):
        direction, m, v = self.direction(grad, slots["m"], slots["v"], self.t, beta_1, beta_2, epsilon)
        return learning_rate * direction, {"m": m, "v": v}


class TensorSlotsAdam(_AdamMath):
    """The guide's Adam slot lists: moments kept in Python lists whose entries are rebound to tensors."""

    def step_values(self, **_):
        self.position = 0  # the guide's enumerate(zip(grads, vars))
        return {}

    def update(self, grad, slots, *, learning_rate, beta_1, beta_2, epsilon, step, **_):
        if not hasattr(self, "moments"):
            self.moments = []
        if len(self.moments) <= self.position:
            self.moments.append((tf.zeros_like(grad), tf.zeros_like(grad)))
        m, v = self.moments[self.position]
        direction, m, v = self.direction(grad, m, v, step, beta_1, beta_2, epsilon)
        self.moments[self.position] = (m, v)
        self.position += 1
        return learning_rate * direction, {}


class CapturedLearningRate(tfopt.Optimizer):
    """Reads the learning rate once, at construction, into a Python float: later changes are ignored."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rate = float(self.learning_rate.numpy())

    def update(self, grad, slots, **_):
        return self.rate * grad, {}


class NumpyMomentum(tfopt.Optimizer):
    """Reads a hyperparameter with ``.numpy()`` inside ``update``: fine eagerly, fails in ``tf.function``."""

    slot_names = ("velocity",)
    momentum = tfopt.Hyperparameter(0.7, check=tfopt.checks.unit_interval)

    def update(self, grad, slots, *, learning_rate, **_):
        velocity = learning_rate * grad + float(self.momentum.numpy()) * slots["velocity"]
        return velocity, {"velocity": velocity}


class Float32ConstantMomentum(tfopt.Optimizer):
    """Mixes a float32 constant into the update: a float64 variable fails."""

    slot_names = ("velocity",)

    def update(self, grad, slots, *, learning_rate, **_):
        velocity = learning_rate * grad + tf.constant(0.9) * slots["velocity"]
        return velocity, {"velocity": velocity}


class UndeclaredWarmup(tfopt.Optimizer):
    """Takes ``warmup`` in its own ``__init__`` instead of declaring ``tfopt.Option``: lost by ``get_config``."""

    def __init__(self, *args, warmup=10, **kwargs):
        super().__init__(*args, **kwargs)
        self.warmup = warmup

    def update(self, grad, slots, *, learning_rate, step, **_):
        return learning_rate * tf.minimum(1.0, step / self.warmup) * grad, {}

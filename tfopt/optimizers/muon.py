"""Muon (Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural networks", with the update RMS
scaling of Liu et al., 2025, "Muon is Scalable for LLM Training", arXiv:2502.16982), as Keras 3's
``keras.optimizers.Muon``.

Muon orthogonalizes the momentum of each 2-D weight matrix; every other variable takes an AdamW step. With
``mu = momentum``, ``a, b, c = muon_a, muon_b, muon_c`` and t the 1-based step, a 2-D variable X of shape (r, k):

    m <- mu * m + g
    G = g + mu * m   (nesterov)   or   G = m
    O = NS5(G):  X0 = G / (||G||_F + 1e-7)           (transposed first if r > k; back at the end)
                 repeat ns_steps times:  A = X X^T;  B = b A + c (A A);  X <- a X + B X
    X <- X - (lr * O) * (sqrt(max(r, k)) * rms_rate)        (no last factor if rms_rate is None)

The quintic Newton-Schulz iteration NS5 pushes the singular values of G towards 1 (to about [0.7, 1.2], not
exactly: U S' V^T rather than U V^T). Every variable of another rank, and a 2-D one whose name contains
"embedding" (``exclude_embeddings``) or matches a regular expression of ``exclude_layers`` (``re.search`` on the
Keras path, e.g. ``"dense_1/kernel"``; a ``tf.Variable``'s name without its ``:0``), takes Keras Muon's AdamW
step instead, with ``lr' = lr * adam_lr_ratio`` and slots ``m`` (``momentum``) and ``v`` (``velocity``):

    m <- m + (g - m) * (1 - adam_beta_1);   v <- v + (g^2 - v) * (1 - adam_beta_2)
    X <- X - (m * alpha) / (sqrt(v) + epsilon),   alpha = lr' * sqrt(1 - adam_beta_2^t) / (1 - adam_beta_1^t)

(Keras's epsilon-hat Adam, the powers taken in the variable's dtype as Keras does.) Weight decay, before the
step as in Keras: ``X <- X - X * wd * lr`` with ``wd = weight_decay`` (default 0.004; ``None``: none) on the
Muon variables and ``wd = adam_weight_decay`` (default 0.004; Keras's ``None`` is 0 here) on the AdamW ones,
the plain ``lr`` in both, ``exclude_from_weight_decay`` honoured.

Keras's numbers: bit for bit on the AdamW variables (``1 - b`` formed in float64, as Keras forms it from a Python
float), within float32 rounding on the Muon ones (about 1e-7 relative per step; see tests/test_muon.py). There
tfopt's ops differ from Keras's where Keras's round differently in a graph than eagerly (so Keras's own Muon does
not take the same steps eagerly and in ``fit``), and tfopt's are the same in both modes:

* momentum: Keras's ``m + (g + (mu - 1) m)`` is two chained additions that a graph's arithmetic optimization may
  regroup; tfopt writes ``mu m + g``;
* Keras's ``c * A @ A`` is ``(c A) A``, which a graph computes differently; tfopt writes ``c (A A)``;
* ``X X^T`` is one ``matmul(X, X, transpose_b=True)`` (a graph folds an explicit transpose into the product);
* Keras's ``(lr O) sqrt(max(r, k)) rms_rate`` is ``(lr O)`` times the one constant ``sqrt(max(r, k)) rms_rate``
  (a graph folds two constant factors into one).

Slots: ``momentum`` and ``velocity`` on every variable (Keras makes ``velocity`` only for the AdamW ones; here it
stays 0 on the Muon ones), so 2 per parameter.
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter, Option
from tfopt.core.optimizer import Optimizer, _decay, compute_dtype

WEIGHT_DECAY = 0.004
"""Keras's default ``weight_decay`` for Muon."""

_DEFAULT = object()


def _check_layers(name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"Invalid {name}: {value!r}; it must be None or a list of regular expressions (strings).")
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"Invalid {name}: {pattern!r} is not a regular expression ({error}).") from None


def _check_steps(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Invalid {name}: {value!r}; it must be an int >= 0.")


def _check_rms_rate(name: str, value) -> None:
    if value is not None:
        checks.non_negative(name, value)
        checks.finite(name, value)


def newton_schulz5(g: tf.Tensor, steps: int, a, b, c) -> tf.Tensor:
    """Keras Muon's ``zeropower_via_newtonschulz5``: the quintic Newton-Schulz orthogonalization of a matrix."""
    tall = g.shape[-2] > g.shape[-1]
    x = tf.linalg.matrix_transpose(g) if tall else g
    x = x / (tf.sqrt(tf.reduce_sum(x * x, axis=(-2, -1), keepdims=True)) + 1e-7)
    for _ in range(steps):
        gram = tf.linalg.matmul(x, x, transpose_b=True)  # (not x @ x^T: graphs fold the transpose, rounding otherwise)
        x = a * x + (b * gram + c * (gram @ gram)) @ x  # (Keras: (c * gram) @ gram; see the module docstring)
    return tf.linalg.matrix_transpose(x) if tall else x


class Muon(Optimizer):
    """Muon with Keras 3's arguments and defaults (Newton-Schulz on 2-D variables, AdamW on the others).

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule).
      adam_beta_1, adam_beta_2: the AdamW step's moment decay rates in [0, 1).
      adam_weight_decay: >= 0, the AdamW variables' weight decay.
      epsilon: >= 0, the AdamW step's epsilon hat.
      exclude_layers: regular expressions; a 2-D variable whose path matches one takes the AdamW step.
      exclude_embeddings: whether a 2-D variable whose path contains "embedding" takes the AdamW step.
      muon_a, muon_b, muon_c: the Newton-Schulz coefficients.
      adam_lr_ratio: >= 0, the AdamW step's learning rate is ``lr * adam_lr_ratio``.
      momentum: ``mu`` in [0, 1).
      ns_steps: the Newton-Schulz iterations (an int >= 0, fixed).
      nesterov: whether the Muon step orthogonalizes ``g + mu * m`` (else ``m``).
      rms_rate: ``None`` or >= 0: the update's scale ``sqrt(max(r, k)) * rms_rate`` (fixed).
      weight_decay: ``None`` or >= 0 (default 0.004, as in Keras): the Muon variables' weight decay.
      **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.
    """

    slot_names = ("momentum", "velocity")
    adam_beta_1 = Hyperparameter(0.9, check=checks.unit_interval)
    adam_beta_2 = Hyperparameter(0.999, check=checks.unit_interval)
    adam_weight_decay = Hyperparameter(WEIGHT_DECAY, check=checks.non_negative)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)
    exclude_layers = Option(None, check=_check_layers)
    exclude_embeddings = Option(True, check=checks.boolean)
    muon_a = Hyperparameter(3.4445, check=checks.finite)
    muon_b = Hyperparameter(-4.7750, check=checks.finite)
    muon_c = Hyperparameter(2.0315, check=checks.finite)
    adam_lr_ratio = Hyperparameter(1.0, check=checks.non_negative)
    momentum = Hyperparameter(0.95, check=checks.unit_interval)
    ns_steps = Option(5, check=_check_steps)
    nesterov = Option(True, check=checks.boolean)
    rms_rate = Option(0.2, check=_check_rms_rate)

    def __init__(self, *args, weight_decay=_DEFAULT, **kwargs):
        super().__init__(*args, weight_decay=WEIGHT_DECAY if weight_decay is _DEFAULT else weight_decay, **kwargs)
        self._adamw_now = False

    def get_config(self) -> dict:
        """As the base's, with ``weight_decay`` also when it is None (its default is not None)."""
        config = super().get_config()
        config.setdefault("weight_decay", None)
        return config

    # ------------------------------------------------------------- which step
    def uses_adamw(self, variable) -> bool:
        """Whether ``variable`` takes the AdamW step (Keras's ``_should_use_adamw``): not 2-D, an embedding
        (``exclude_embeddings``), or a path matching ``exclude_layers``."""
        if len(variable.shape) != 2:
            return True
        path = _path(variable)
        if self.exclude_embeddings and "embedding" in path.lower():
            return True
        return any(re.search(pattern, path) for pattern in self.exclude_layers or ())

    def _apply_one(self, grad, variable, slots, scalars, dtype) -> None:
        # ``update`` sees tensors only; the choice of step depends on the variable's name (read here, static)
        self._adamw_now = self.uses_adamw(variable)
        try:
            super()._apply_one(grad, variable, slots, scalars, dtype)
        finally:
            self._adamw_now = False

    def _apply_weight_decay(self, strategy, variables: list, scalars: dict) -> None:
        """Keras Muon's weight decay: ``adam_weight_decay`` on the AdamW variables, ``weight_decay`` (unless None)
        on the others, ``x <- x - x * wd * lr``."""
        for variable in variables:
            if self._weight_decay_exclusions.excludes(variable):
                continue
            if self.uses_adamw(variable):
                rate = scalars["adam_weight_decay"]
            elif self.weight_decay is not None:
                rate = tf.convert_to_tensor(self.weight_decay)
            else:
                continue
            dtype = compute_dtype(variable.dtype)
            args = (tf.cast(rate, dtype), tf.cast(scalars["learning_rate"], dtype), dtype)
            if strategy is None:
                _decay(variable, *args)
            else:
                strategy.extended.update(variable, _decay, args=args, group=False)

    # ------------------------------------------------------------------ math
    def step_values(self, *, step, adam_beta_1, adam_beta_2, **_):
        """``1 - b1`` and ``1 - b2`` in float64, as Keras forms them from Python floats."""
        return {"one_minus_beta_1": 1 - adam_beta_1, "one_minus_beta_2": 1 - adam_beta_2}

    def update(self, grad, slots, *, learning_rate, step, **inputs):
        if grad.shape.rank is None:  # (the rule compiler traces on unknown shapes: it must decline Muon)
            raise ValueError("Muon's step depends on the variable's rank (Newton-Schulz on 2-D variables): it "
                             "needs a gradient of known rank.")
        if self._adamw_now or grad.shape.rank != 2:
            return self._adamw(grad, slots, learning_rate * inputs["adam_lr_ratio"], step, **inputs)
        return self._muon(grad, slots, learning_rate, **inputs)

    def _muon(self, grad, slots, learning_rate, *, momentum, muon_a, muon_b, muon_c, **_):
        m = momentum * slots["momentum"] + grad  # (Keras: m + (g + (mu - 1) m); see the module docstring)
        direction = grad + momentum * m if self.nesterov else m
        delta = learning_rate * newton_schulz5(direction, self.ns_steps, muon_a, muon_b, muon_c)
        if self.rms_rate is not None:  # one constant factor (two would be folded into one in graphs only)
            delta = delta * _rms_factor(max(grad.shape[0], grad.shape[1]), self.rms_rate, delta.dtype)
        return delta, {"momentum": m, "velocity": slots["velocity"]}

    @staticmethod
    def _adamw(grad, slots, learning_rate, step, *, adam_beta_1, adam_beta_2, epsilon, one_minus_beta_1,
               one_minus_beta_2, **_):
        alpha = learning_rate * tf.sqrt(1 - tf.pow(adam_beta_2, step)) / (1 - tf.pow(adam_beta_1, step))
        m = slots["momentum"] + (grad - slots["momentum"]) * one_minus_beta_1
        v = slots["velocity"] + (tf.square(grad) - slots["velocity"]) * one_minus_beta_2
        return (m * alpha) / (tf.sqrt(v) + epsilon), {"momentum": m, "velocity": v}


def _rms_factor(size: int, rms_rate: float, dtype: tf.DType) -> tf.Tensor:
    """``sqrt(size) * rms_rate`` rounded in ``dtype`` as a graph's constant folding rounds Keras's
    ``x * sqrt(size) * rms_rate``: one factor, so eager and ``tf.function`` multiply by the same number."""
    numpy_dtype = dtype.as_numpy_dtype
    return tf.constant(numpy_dtype(np.sqrt(numpy_dtype(size))) * numpy_dtype(rms_rate), dtype)


def _path(variable) -> str:
    """A variable's Keras path (``"dense/kernel"``): ``.path``, else its ``tf.Variable`` name without ``:0`` (and
    without a ``tf.distribute`` replica suffix)."""
    path = getattr(variable, "path", None) or variable.name
    return re.sub(r"(/replica_\d+)?:\d+$", "", path)


# help() and IDEs: weight_decay with Keras's default
Muon.__signature__ = Muon.__signature__.replace(parameters=[
    p.replace(default=WEIGHT_DECAY) if p.name == "weight_decay" else p for p in Muon.__signature__.parameters.values()])

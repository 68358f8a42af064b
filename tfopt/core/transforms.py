"""Composable gradient transforms: the parts ``tfopt.chain`` builds an optimizer from.

A transform maps its input ``u`` (the gradient, for the first of a chain) to its output, elementwise
per variable, with its own slots and hyperparameters; a chain's last output is the step ``delta``
and ``x <- x - delta``. No transform negates. ``u``, the slots and the inputs are tensors in the
variable's compute dtype (float32 for float16/bfloat16 variables).

    adamw = tfopt.chain(
        tfopt.transforms.clip_by_global_norm(1.0),
        tfopt.transforms.scale_by_adam(beta_1=0.9, beta_2=0.999, epsilon=1e-7),
        tfopt.transforms.add_decayed_weights(1e-2),
        tfopt.transforms.scale_by_learning_rate(1e-3),
    )

============================================  ================================================================
``scale_by_adam(beta_1, beta_2, epsilon)``    ``m_hat / (sqrt(v_hat) + eps)``: Adam's bias-corrected direction
``scale_by_rms(rho, epsilon)``                ``u / (sqrt(v) + eps)``, ``v <- rho*v + (1-rho)*u^2``
``trace(decay, nesterov=False)``              ``t <- decay*t + u``, output ``t`` (Nesterov: ``u + decay*t``)
``scale_by_sign()``                           ``sign(u)``
``scale(factor)``                             ``factor * u``
``clip(max_delta)``                           ``u`` clipped elementwise to ``[-max_delta, max_delta]``
``add_decayed_weights(rate)``                 ``u + rate * x`` (x the variable's value)
``clip_by_global_norm(max_norm)``             ``u * min(1, max_norm / ||u||)``, the norm over every variable
``scale_by_learning_rate(learning_rate)``     ``learning_rate * u`` (a number, a variable or a schedule)
============================================  ================================================================

Each lowercase name is its class (``scale_by_adam is ScaleByAdam``). Your own transform is declared
like a rule (see ``tfopt.Optimizer``)::

    class ScaleByRss(tfopt.transforms.Transform):
        \"\"\"Adagrad's direction: s <- s + u^2;  out = u / (sqrt(s) + eps).\"\"\"

        slot_names = ("sum",)
        epsilon = tfopt.Hyperparameter(1e-7, check=tfopt.checks.non_negative)

        def update(self, u, slots, *, epsilon, **_):
            s = slots["sum"] + tf.square(u)
            return u / (tf.sqrt(s) + epsilon), {"sum": s}

    adagrad = tfopt.chain(ScaleByRss(), tfopt.transforms.scale_by_learning_rate(0.1))

``update(self, u, slots, **inputs) -> (out, new_slots)`` is pure; ``inputs`` are the transform's own
hyperparameters, ``step`` (t, from 1), ``param`` (the variable's value), what its ``step_values``
returns and what its ``reduce`` returns. ``reduce(self, inputs, **scalars) -> dict`` (optional) sees
the transform's input for every variable of the ``apply_gradients`` call at once: cross-variable
values such as the global norm.
"""

from __future__ import annotations

import re

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter, Option, arguments, config_values, declared, signature
from tfopt.optimizers.adam import adam_update

__all__ = [
    "AddDecayedWeights", "Clip", "ClipByGlobalNorm", "Scale", "ScaleByAdam", "ScaleByLearningRate", "ScaleByRms",
    "ScaleBySign", "Trace", "Transform", "add_decayed_weights", "clip", "clip_by_global_norm", "scale",
    "scale_by_adam", "scale_by_learning_rate", "scale_by_rms", "scale_by_sign", "trace",
]

_KEYWORDS = ("name",)


def _snake(name: str) -> str:
    """``ScaleByAdam`` -> ``scale_by_adam``: a transform's default name."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class Transform(tf.Module):
    """Base class of a chain's parts; declared like a rule: ``slot_names``, ``Hyperparameter`` and
    ``Option`` class attributes (constructor keywords, no ``__init__``), a pure ``update``.

    Args:
      *args, **kwargs: the declared hyperparameters and options, in declaration order.
      name: the transform's name (default: the class name in snake case, ``scale_by_adam``); a chain
        prefixes its slot names with it (``scale_by_adam_m``).

    A ``tf.Module``: its hyperparameter variables are saved by ``tf.train.Checkpoint`` with the chain.
    """

    slot_names: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__signature__ = signature(declared(cls), _KEYWORDS)

    def __init__(self, *args, name: str | None = None, **kwargs):
        super().__init__(name=name or _snake(type(self).__name__))
        self._hyper, self._own_hyper_ids, self._options = {}, set(), {}
        for declaration, value in arguments(type(self), declared(type(self)), args, kwargs, _KEYWORDS):
            setattr(self, declaration.name, value)

    def get_config(self) -> dict:
        """The constructor arguments: hyperparameters as numbers (schedules and user variables as they are)."""
        return {"name": self.name, **config_values(self)}

    @classmethod
    def from_config(cls, config: dict) -> Transform:
        return cls(**config)

    def step_values(self, *, step: tf.Tensor, **hyperparameters) -> dict[str, tf.Tensor]:
        """Optional: float64 values computed once per step from ``step`` and the hyperparameters."""
        return {}

    def reduce(self, inputs: list[tf.Tensor], **scalars) -> dict[str, tf.Tensor]:
        """Optional: scalars from this transform's input of every variable at once, added to its ``update`` inputs.

        ``inputs`` are those tensors (in each variable's compute dtype), ``scalars`` the transform's
        float64 hyperparameters, ``step`` and ``step_values()``. Under ``tf.distribute`` the inputs are
        the all-reduced ones, so the result equals a single device's.
        """
        return {}

    def update(self, u: tf.Tensor, slots: dict[str, tf.Tensor], **inputs) -> tuple[tf.Tensor, dict]:
        """Pure: return ``(out, new_slots)`` with every name of ``slot_names`` in ``new_slots``."""
        raise NotImplementedError(f"{type(self).__name__} must define update(self, u, slots, **inputs).")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def reduces(transform: Transform) -> bool:
    """Whether ``transform`` defines ``reduce`` (then a chain hands it every variable's input)."""
    return type(transform).reduce is not Transform.reduce


# ------------------------------------------------------------------ the built-ins
class ScaleByAdam(Transform):
    """Adam's direction (Kingma & Ba, 2015, Algorithm 1), with slots ``m``, ``v`` and t the 1-based step::

        m <- b1*m + (1-b1)*u;   v <- b2*v + (1-b2)*u^2
        out = m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)

    Epsilon sits outside the bias-corrected root, as in ``tfopt.Adam`` (not Keras's "epsilon hat").
    It runs ``tfopt.optimizers.adam.adam_update`` with a learning rate of 1 (exact), so
    ``chain(scale_by_adam(...), scale_by_learning_rate(lr))`` equals ``tfopt.Adam(lr, ...)`` bit for bit.
    """

    slot_names = ("m", "v")
    beta_1 = Hyperparameter(0.9, check=checks.unit_interval)
    beta_2 = Hyperparameter(0.999, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)

    def step_values(self, *, step, beta_1, beta_2, **_):
        return dict(one_minus_beta_1=1 - beta_1, correction_1=1 - beta_1**step,
                    one_minus_beta_2=1 - beta_2, correction_2=1 - beta_2**step)

    def update(self, u, slots, *, beta_1, one_minus_beta_1, correction_1, beta_2, one_minus_beta_2, correction_2,
               epsilon, **_):
        out, m, v = adam_update(u, slots["m"], slots["v"], learning_rate=1, beta_1=beta_1,
                                one_minus_beta_1=one_minus_beta_1, correction_1=correction_1, beta_2=beta_2,
                                one_minus_beta_2=one_minus_beta_2, correction_2=correction_2, epsilon=epsilon)
        return out, {"m": m, "v": v}


class ScaleByRms(Transform):
    """RMSprop's direction, with slot ``v`` (starts at 0)::

        v <- rho*v + (1-rho)*u^2;   out = u / (sqrt(v) + eps)
    """

    slot_names = ("v",)
    rho = Hyperparameter(0.9, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)

    def step_values(self, *, rho, **_):
        return {"one_minus_rho": 1 - rho}

    def update(self, u, slots, *, rho, one_minus_rho, epsilon, **_):
        v = rho * slots["v"] + one_minus_rho * tf.square(u)
        return u / (tf.sqrt(v) + epsilon), {"v": v}


class Trace(Transform):
    """Momentum's accumulator, with slot ``trace`` (starts at 0)::

        t <- decay*t + u;   out = t   (Nesterov: out = u + decay*t, with the new t)
    """

    slot_names = ("trace",)
    decay = Hyperparameter(0.9, check=checks.unit_interval)
    nesterov = Option(False, check=checks.boolean)

    def update(self, u, slots, *, decay, **_):
        t = decay * slots["trace"] + u
        return (u + decay * t if self.nesterov else t), {"trace": t}


class ScaleBySign(Transform):
    """``out = sign(u)`` (signSGD; 0 where u is 0)."""

    def update(self, u, slots, **_):
        return tf.sign(u), {}


class Scale(Transform):
    """``out = factor * u``."""

    factor = Hyperparameter(check=checks.finite)

    def update(self, u, slots, *, factor, **_):
        return factor * u, {}


class Clip(Transform):
    """``out = u`` clipped elementwise to ``[-max_delta, max_delta]``."""

    max_delta = Hyperparameter(check=checks.non_negative)

    def update(self, u, slots, *, max_delta, **_):
        return tf.clip_by_value(u, -max_delta, max_delta), {}


class AddDecayedWeights(Transform):
    """``out = u + rate * x``, x the variable's value: decoupled weight decay (AdamW, Loshchilov & Hutter,
    2019) when it comes after the direction and before ``scale_by_learning_rate``."""

    rate = Hyperparameter(check=checks.non_negative)

    def update(self, u, slots, *, rate, param, **_):
        return u + rate * param, {}


class ClipByGlobalNorm(Transform):
    """``out = u * min(1, max_norm / ||u||)``, ``||u||`` the Euclidean norm of the inputs of EVERY variable
    of the ``apply_gradients`` call together (under ``tf.distribute``: of the all-reduced gradients).

    The squares are summed per variable in its compute dtype, the sums and the factor in float64.
    """

    max_norm = Hyperparameter(check=checks.positive)

    def reduce(self, inputs, *, max_norm, **_):
        norm = tf.sqrt(tf.add_n([tf.cast(tf.reduce_sum(tf.square(u)), tf.float64) for u in inputs]))
        return {"factor": tf.minimum(tf.constant(1, tf.float64), max_norm / norm)}  # norm 0: max_norm/0 = inf

    def update(self, u, slots, *, factor, **_):
        return u * factor, {}


class ScaleByLearningRate(Transform):
    """``out = learning_rate * u``; ``learning_rate`` a number, a ``tf.Variable`` or a schedule of the step.

    A chain's ``learning_rate`` is this transform's (so ``opt.learning_rate = ...``, Keras callbacks and
    ``tfopt run --learning-rate`` reach it).
    """

    learning_rate = Hyperparameter(check=checks.non_negative, schedulable=True)

    def update(self, u, slots, *, learning_rate, **_):
        return learning_rate * u, {}


scale_by_adam = ScaleByAdam
scale_by_rms = ScaleByRms
trace = Trace
scale_by_sign = ScaleBySign
scale = Scale
clip = Clip
add_decayed_weights = AddDecayedWeights
clip_by_global_norm = ClipByGlobalNorm
scale_by_learning_rate = ScaleByLearningRate

"""AdamW, Adam with decoupled weight decay (Loshchilov & Hutter, 2019, "Decoupled Weight
Decay Regularization", Algorithm 2).

With slots ``m`` and ``v`` (per variable, start at 0), t the 1-based step and ``wd`` the
weight decay:

    x <- x - lr * wd * x                  # decoupled: m and v never see it
    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g^2
    m_hat = m / (1 - b1^t)
    v_hat = v / (1 - b2^t)
    x <- x - lr * (m_hat / (sqrt(v_hat) + eps))

The paper's schedule multiplier is the learning rate's schedule here, as in Keras. The decay
is the base optimizer's ``weight_decay`` (applied as Keras applies it: ``x - x * wd * lr``,
before the step, in the variable's compute dtype), here on by default; since the Adam step
does not read x, decaying first equals the paper's single update from the old x.

Epsilon form: tfopt.Adam's (the paper's): eps outside the bias-corrected root.
``keras.optimizers.AdamW`` (same arguments, order and defaults: ``learning_rate=0.001``,
``weight_decay=0.004``, ``beta_1=0.9``, ``beta_2=0.999``, ``epsilon=1e-7``) uses Keras Adam's
"epsilon hat", ``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps_hat)``, which is this
rule with ``eps_hat = eps * sqrt(1 - b2^t)`` (a different value each step): the two agree at
eps = 0 (to float32 rounding) and closely when eps is tiny next to sqrt(v_hat). Keras's
``amsgrad`` is not offered.
"""

from __future__ import annotations

import inspect

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter
from tfopt.core.optimizer import Optimizer
from tfopt.optimizers.adam import Adam

WEIGHT_DECAY = 0.004
"""Keras's default."""


_DEFAULT = object()  # (tells weight_decay given as a keyword from its default)

class AdamW(Optimizer):
    """AdamW: Adam with decoupled weight decay, the paper's epsilon placement.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule).
      weight_decay: ``wd``, a number >= 0 (not None, as in Keras): ``x <- x - lr * wd * x`` each step.
      beta_1, beta_2: moment decay rates ``b1``, ``b2`` in [0, 1).
      epsilon: ``eps`` >= 0, added to ``sqrt(v_hat)``.
      **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.
    """

    slot_names = ("m", "v")
    beta_1 = Hyperparameter(0.9, check=checks.unit_interval)
    beta_2 = Hyperparameter(0.999, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)

    def __init__(self, *args, weight_decay=_DEFAULT, **kwargs):
        if len(args) > 1:  # Keras's order: (learning_rate, weight_decay, beta_1, ...)
            if weight_decay is not _DEFAULT:
                raise TypeError("AdamW() got multiple values for argument 'weight_decay'")
            args, weight_decay = (args[0], *args[2:]), args[1]
        weight_decay = WEIGHT_DECAY if weight_decay is _DEFAULT else weight_decay
        if weight_decay is None:
            raise ValueError("Invalid weight_decay: None; AdamW's must be a number >= 0 (tfopt.Adam has none).")
        super().__init__(*args, weight_decay=weight_decay, **kwargs)

    # Adam's bias corrections and step; the base has already decayed x (x <- x - x * wd * lr)
    step_values = Adam.step_values
    update = Adam.update


# help() and IDEs: weight_decay second, as in Keras, with its default
_parameters = [p for p in AdamW.__signature__.parameters.values() if p.name != "weight_decay"]
_parameters.insert(1, inspect.Parameter("weight_decay", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=WEIGHT_DECAY))
AdamW.__signature__ = AdamW.__signature__.replace(parameters=_parameters)

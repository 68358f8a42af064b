"""``tfopt.MultiSteps``: gradient accumulation (Optax's ``MultiSteps``)."""

from __future__ import annotations

import tensorflow as tf

from tfopt.core.hyperparameters import Option
from tfopt.core.wrapper import Wrapper, compute, read, wrapper_signature

__all__ = ["MultiSteps"]


def _check_every_k(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r}; it must be an int >= 1.")


class MultiSteps(Wrapper):
    """Step ``optimizer`` once every ``every_k`` calls, with the mean of those calls' gradients.

    Calls 1..k-1 of each group only add their gradients to an ``accumulator`` slot per variable (of the
    variable's dtype, the sums computed in its compute dtype: float32 for half precision; sparse gradients are
    densified); call k steps the inner optimizer with ``(accumulator + g) / k`` and resets the accumulators to
    zero. The result is the inner optimizer stepped once with the mean of the k gradients, bit for bit.

    ``iterations`` counts the calls; the inner optimizer's ``iterations`` (``gradient_steps``) counts the steps
    applied, ``iterations // k``: it is set from ``iterations`` before each inner step, so the state is
    ``iterations`` and the slots, as for any optimizer. Every call must pass the same variables. The inner
    optimizer's hyperparameters are read on the applying calls only (a schedule's negative learning rate
    raises at call k).

    Args:
      optimizer: the ``tfopt.Optimizer`` to step.
      every_k: the number of calls per step (an int >= 1, fixed).
      name: the module name (default ``"MultiSteps"``).
    """

    every_k = Option(4, check=_check_every_k)
    own_slot_names = ("accumulator",)
    shares_iterations = False

    @property
    def gradient_steps(self) -> tf.Variable:
        """The steps applied: the inner optimizer's ``iterations``."""
        return self.inner_optimizer.iterations

    def _apply(self, strategy, pairs: list[tuple]) -> tf.Variable:
        variables = [v for _, v in pairs]
        self.build(variables)  # no variable may be created inside the cond
        accumulators = [self._slots_of(v)["accumulator"] for v in variables]
        dtypes = [compute(v) for v in variables]
        grads = [tf.cast(tf.convert_to_tensor(g), d) for (g, _), d in zip(pairs, dtypes)]
        k = self.every_k

        def step():
            self.inner_optimizer.iterations.assign(self.iterations // k)  # its state: iterations and slots only
            # (divide_no_nan: a plain division by the constant k becomes a multiplication by 1/k in tf.function)
            means = [tf.math.divide_no_nan(read(a, d) + g, tf.cast(k, d))
                     for a, g, d in zip(accumulators, grads, dtypes)]
            self._inner_step(list(zip(means, variables)))
            for a in accumulators:
                a.assign(tf.zeros_like(a))
            return tf.constant(True)

        def accumulate():
            for a, g, d in zip(accumulators, grads, dtypes):
                if d == a.dtype:
                    a.assign_add(g)
                else:  # half precision: add in float32, round once
                    a.assign(tf.cast(read(a, d) + g, a.dtype))
            return tf.constant(False)

        tf.cond(tf.equal((self.iterations + 1) % k, 0), step, accumulate)
        self.iterations.assign_add(1)
        return self.iterations


MultiSteps.__signature__ = wrapper_signature(MultiSteps)

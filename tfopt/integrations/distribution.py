"""tf.distribute support: which strategies, where slots live, how gradients meet.

Under ``MirroredStrategy`` or ``MultiWorkerMirroredStrategy`` the optimizer is
created inside ``strategy.scope()``, like the model. ``apply_gradients`` called
in a replica context (inside ``strategy.run``) first sums the gradients across
replicas, as Keras's optimizers do — so scale the loss by the *global* batch
size — then updates every copy of each variable identically. Slots are
created as distributed variables beside their variables.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

SUPPORTED = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy, tf.distribute.OneDeviceStrategy)


def current_strategy(optimizer, variables) -> tf.distribute.Strategy | None:
    """The active strategy, or ``None`` outside any; raise if tfopt cannot serve it."""
    if not tf.distribute.has_strategy():
        return None
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, SUPPORTED):
        raise NotImplementedError(
            f"tfopt optimizers do not support {type(strategy).__name__}; use MirroredStrategy, "
            "MultiWorkerMirroredStrategy or OneDeviceStrategy."
        )
    if not strategy.extended.variable_created_in_scope(optimizer.iterations):
        raise ValueError(
            f"{type(optimizer).__name__} was created outside the scope of {type(strategy).__name__}: "
            "create the optimizer inside `with strategy.scope():`, like the model."
        )
    for variable in variables:
        if not strategy.extended.variable_created_in_scope(variable):
            raise ValueError(
                f"Variable {variable.name!r} was not created under {type(strategy).__name__}'s scope: "
                "create the model and the optimizer inside `with strategy.scope():`."
            )
    return strategy


def all_reduce_sum(gradients: list) -> list:
    """Sum gradients across replicas when called in a replica context of a strategy."""
    context = tf.distribute.get_replica_context()
    if context is None or not tf.distribute.has_strategy() or context.num_replicas_in_sync == 1:
        return gradients
    return context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)


def slot_creation_scope(variable: tf.Variable):
    """Create slots eagerly, beside ``variable``: on its device, or as distributed variables if it is one."""
    stack = contextlib.ExitStack()
    stack.enter_context(tf.init_scope())
    strategy = getattr(variable, "_distribute_strategy", None)
    if strategy is not None:
        stack.enter_context(strategy.scope())
        stack.enter_context(strategy.extended.colocate_vars_with(variable))
    else:
        stack.enter_context(tf.device(variable.device))
    return stack

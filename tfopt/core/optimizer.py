"""The base class every tfopt optimizer shares, and the public extension API.

A rule is a subclass that declares its slots and hyperparameters and writes one pure
function of tensors::

    class RMSprop(tfopt.Optimizer):
        # v <- rho*v + (1-rho)*g^2;  x <- x - lr * g / (sqrt(v) + eps)

        slot_names = ("v",)
        rho = tfopt.Hyperparameter(0.9, check=tfopt.checks.unit_interval)
        epsilon = tfopt.Hyperparameter(1e-7, check=tfopt.checks.non_negative)

        def update(self, grad, slots, *, learning_rate, rho, epsilon, **_):
            v = rho * slots["v"] + (1 - rho) * tf.square(grad)
            return learning_rate * grad / (tf.sqrt(v) + epsilon), {"v": v}

* ``slot_names``: one slot variable of each name per model variable (zeros, the variable's
  shape and dtype, or the shape an optional ``slot_shape(name, variable_shape)`` gives), created
  once, lazily or by ``build``.
* ``tfopt.Hyperparameter(default, check=None)`` class attributes: constructor keywords
  (no ``__init__`` needed; ``learning_rate`` is declared here and may be positional), held in
  variables so that changing them between steps needs no retrace. ``tfopt.Option(default)``
  declares a fixed structural choice (``nesterov``), read as ``self.<name>``.
* ``update(grad, slots, **inputs) -> (delta, new_slots)``: the base applies ``x <- x - delta``
  and assigns every slot. ``inputs`` are ``learning_rate``, each hyperparameter, ``step`` (t,
  counted from 1), ``param`` (the variable's value) and what ``step_values`` adds, all tensors
  in the variable's compute dtype (float32 for float16/bfloat16 variables).
* ``step_values(step, **hyperparameters) -> dict`` (optional): values computed once per step,
  in float64 (bias corrections), added to ``inputs``; ``gradient_values(grads, variables, **inputs)``
  (optional) likewise from all the variables' gradients at once (``tfopt.transforms.clip_by_global_norm``).

Everything else lives here: argument checks, lazy slot creation that is safe inside
``tf.function``, the step counter, clipping, sparse gradients, casting, distribution.
Built-ins may also offer ``_apply_multi``, the step of all variables at once as a native op
(``tfopt.kernels.native``), and ``_apply_fused``, one variable's step as one of TensorFlow's fused
kernels (``tfopt.kernels.fused``); ``fused=`` chooses. Any other rule whose ``update`` is elementwise
(a subclass, a chain) gets the first from its ``update`` itself: the rule compiler
(``tfopt.kernels.compiler``) derives one native op with the plain ops' numbers bit for bit, or declines
(``tfopt.kernels.compiler.explain(opt)`` says why) and the plain ops run.
"""

from __future__ import annotations

import inspect
import threading

import tensorflow as tf
from tensorflow.python.autograph.core import ag_ctx
from tensorflow.python.autograph.impl import api as ag_api

from tfopt.core import checks
from tfopt.core.clipping import check_clipping, clip_gradients
from tfopt.core.hyperparameters import Hyperparameter, arguments, config_values, declared, signature
from tfopt.core.validation import check_pairs, gradient_variable_pairs
from tfopt.core.variables import as_tf_variable, display_name, variable_key
from tfopt.integrations.distribution import all_reduce_sum, current_strategy, slot_creation_scope
from tfopt.kernels import compiler
from tfopt.kernels import fused as fused_kernels
from tfopt.kernels import native as native_kernels

_LOW_PRECISION = (tf.float16, tf.bfloat16)


def compute_dtype(dtype: tf.DType) -> tf.DType:
    """float16 and bfloat16 variables are updated in float32 arithmetic, others in their own dtype."""
    return tf.float32 if dtype in _LOW_PRECISION else dtype


def _dedupe(grad: tf.IndexedSlices) -> tf.IndexedSlices:
    """Sum the values of repeated indices, as the dense gradient would."""
    indices, positions = tf.unique(grad.indices)
    values = tf.math.unsorted_segment_sum(grad.values, positions, tf.shape(indices)[0])
    return tf.IndexedSlices(values, indices, grad.dense_shape)


class _Registry:
    """Untracked map from a variable to its position in ``Optimizer._slots``.

    Holds the variables themselves so that their ``id`` stays unique. It is a
    plain object so that checkpoints do not save model variables a second time.
    """

    def __init__(self):
        self.positions: dict[int, int] = {}
        self.variables: list[tf.Variable] = []


class _Exclusions:
    """Untracked: the variables and name substrings ``exclude_from_weight_decay`` named (see ``_Registry``)."""

    def __init__(self, variables=(), names=()):
        self.variables = list(variables)  # as the user gave them (Keras or tf variables), for as_keras()
        self.keys = {variable_key(as_tf_variable(v, i)) for i, v in enumerate(self.variables)}
        self.names = tuple(names)

    def excludes(self, variable: tf.Variable) -> bool:
        return variable_key(variable) in self.keys or any(name in variable.name for name in self.names)


class _WeightDecay:
    """``Optimizer.weight_decay``: ``None`` (off, no op at all) or a number >= 0 held in a float64 variable.

    Reading gives that variable (like a hyperparameter) or ``None``. Setting a number when it is on is an
    ``assign`` that traced ``tf.function``s see with no retrace (0 is on, decaying by nothing); switching
    between ``None`` and a number changes the ops of a step, so it is allowed only before the first step.
    """

    def __get__(self, optimizer, owner=None):
        if optimizer is None:
            return self
        return getattr(optimizer, "_weight_decay", None)

    def __set__(self, optimizer, value) -> None:
        if value is not None:
            if isinstance(value, (bool, str, bytes)) or callable(value):
                raise ValueError(f"Invalid weight_decay: {value!r}; it must be None or a number >= 0.")
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"Invalid weight_decay: {value!r}; it must be None or a number >= 0.") from None
            checks.non_negative("weight_decay", value)
            checks.finite("weight_decay", value)
        current = getattr(optimizer, "_weight_decay", None)
        if current is not None and value is not None:
            current.assign(value)  # seen by traced tf.functions: no retrace
            return
        if (current is None) != (value is None) and getattr(optimizer, "_stepped", False):
            raise ValueError(f"weight_decay cannot be switched {'on' if value is not None else 'off (None)'} "
                             "after the first step (traced steps would not see it); build the optimizer with "
                             "weight_decay=0.0 to change it later without retracing.")
        if value is None:
            optimizer._weight_decay = None
            return
        with tf.init_scope():
            optimizer._weight_decay = tf.Variable(value, dtype=tf.float64, trainable=False, name="weight_decay")


def _decay(variable: tf.Variable, weight_decay: tf.Tensor, learning_rate: tf.Tensor, dtype: tf.DType) -> None:
    """Keras's weight decay of one variable, ``x <- x - x * wd * lr``, in ``dtype`` arithmetic, rounding once.

    In a graph, an ``EnsureShape`` (a no-op) after ``x * wd`` keeps grappler's arithmetic optimizer from
    reassociating the product into ``x * (wd * lr)`` (``MinimizeBroadcasts``), which rounds differently
    from the eager step (see ``tfopt.core._ops``).
    """
    value = tf.cast(tf.convert_to_tensor(variable), dtype)
    scaled = value * weight_decay
    if not tf.executing_eagerly():
        scaled = tf.ensure_shape(scaled, scaled.shape)
    if dtype == variable.dtype:
        variable.assign_sub(scaled * learning_rate)
    else:
        variable.assign(tf.cast(value - scaled * learning_rate, variable.dtype))


class Optimizer(tf.Module):
    """Base class: ``apply_gradients``, ``build``, ``iterations``, ``get_slot``.

    Args:
      learning_rate: a number >= 0, a ``tf.Variable``, or a callable of the step
        (e.g. a ``keras.optimizers.schedules.LearningRateSchedule``).
      fused: ``None`` (default) runs the fastest path that gives the plain-ops
        reference's numbers bit for bit: one native op for all variables
        (``tfopt.kernels.native``), else TensorFlow's fused kernel where exact;
        ``True`` also TensorFlow's kernels that round differently (Adam's);
        ``False`` always the plain-ops reference (see ``tfopt.kernels.fused``).
      clipnorm, clipvalue, global_clipnorm: optional clipping, as in Keras
        (at most one of them).
      weight_decay: ``None`` (default: none) or a number >= 0: as in Keras, before each step's update
        every variable not excluded (``exclude_from_weight_decay``) becomes ``x - x * weight_decay * lr``
        (``lr`` the step's learning rate), in the variable's compute dtype. A number is held in a float64
        variable: ``opt.weight_decay = 0.01`` between steps needs no retrace; switching between ``None``
        and a number is allowed only before the first step (use ``0.0`` to turn it on later).
      name: the module name.
    """

    slot_names: tuple[str, ...] = ()
    weight_decay = _WeightDecay()
    learning_rate = Hyperparameter(1e-3, check=checks.non_negative, schedulable=True)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__signature__ = _signature(cls)
        if _FAST_PATHS.isdisjoint(vars(cls)) and not _MATH.isdisjoint(vars(cls)):
            # A subclass that changes the math (class MyAdam(tfopt.Adam): def update...) must not inherit
            # fast paths that reproduce its base's math: it takes the plain ops of its own update.
            cls._apply_multi = cls._apply_fused = cls._apply_fallback = cls._update_sparse = None
            cls._fused_is_exact = False

    def __init__(self, *args, fused=None, clipnorm=None, clipvalue=None, global_clipnorm=None, name=None,
                 weight_decay=None, **kwargs):
        super().__init__(name=name or type(self).__name__)
        if fused is not None and not isinstance(fused, bool):
            raise ValueError(f"Invalid fused: {fused!r}; it must be None, True or False.")
        check_clipping(clipnorm, clipvalue, global_clipnorm)
        self.fused = fused
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self._hyper = {}
        self._own_hyper_ids = set()
        self._options = {}
        for declaration, value in _arguments(type(self), args, kwargs):
            setattr(self, declaration.name, value)
        with tf.init_scope():
            self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self._slots = []
        self._registry = _Registry()
        self._stepped = False  # set by the first step (or its trace): weight-decay switches are fixed from then on
        self._weight_decay_exclusions = _Exclusions()
        self.weight_decay = weight_decay

    # ---------------------------------------------------------------- config
    def get_config(self) -> dict:
        """The constructor arguments: hyperparameters as numbers (schedules and user variables as they are)."""
        config = {"name": self.name, "clipnorm": self.clipnorm, "clipvalue": self.clipvalue,
                  "global_clipnorm": self.global_clipnorm}
        if self.fused is not None:  # left out at its default, so rule configs (as_keras) stay as they were
            config["fused"] = self.fused
        if self.weight_decay is not None:  # likewise left out when None
            config["weight_decay"] = float(self.weight_decay.numpy())
        config.update(config_values(self))
        return config

    @classmethod
    def from_config(cls, config: dict) -> Optimizer:
        """A new optimizer, without state, from ``get_config()``."""
        return cls(**config)

    def as_keras(self):
        """A ``keras.optimizers.Optimizer`` running this rule, for ``model.compile``/``fit`` (state not copied)."""
        from tfopt.integrations.keras_optimizer import to_keras

        return to_keras(self)

    # ---------------------------------------------------------- weight decay
    def exclude_from_weight_decay(self, var_list=None, var_names=None) -> None:
        """Exclude variables from weight decay, as in Keras; call it before the first step.

        Args:
          var_list: variables (Keras or ``tf.Variable``) not to decay.
          var_names: strings; a variable whose name contains one of them is not decayed
            (``["bias"]``; the name is the ``tf.Variable``'s: a Keras variable's is its path,
            ``"dense/bias:0"``, as Keras matches it on TensorFlow).

        Each call replaces the exclusions of the previous one (as in Keras). After the first step
        (or its trace) it raises ``ValueError``: traced steps would not see the change.
        """
        if self._stepped:
            raise ValueError("exclude_from_weight_decay() can only be called before the optimizer's first step.")
        if isinstance(var_names, str):
            var_names = [var_names]
        for name in var_names or ():
            if not isinstance(name, str):
                raise TypeError(f"var_names must be strings, not {name!r}.")
        self._weight_decay_exclusions = _Exclusions(var_list or (), var_names or ())

    def _weight_decay_learning_rate(self, scalars: dict) -> tf.Tensor:
        """The step's learning rate for weight decay: ``learning_rate`` (a chain: its learning-rate transform's)."""
        if "learning_rate" in scalars:
            return scalars["learning_rate"]
        found = [value for key, value in scalars.items() if key.endswith("/learning_rate")]
        if not found:
            raise ValueError(f"{type(self).__name__} has no learning rate, which weight_decay needs.")
        return found[-1]  # (a chain's inputs are in transform order: the last one declaring a learning rate)

    def _apply_weight_decay(self, strategy, variables: list, scalars: dict) -> None:
        """``x <- x - x * wd * lr`` for each variable not excluded; nothing when ``weight_decay`` is None."""
        if self.weight_decay is None:
            return
        weight_decay = tf.convert_to_tensor(self.weight_decay)
        learning_rate = self._weight_decay_learning_rate(scalars)
        casts = {}
        for variable in variables:
            if self._weight_decay_exclusions.excludes(variable):
                continue
            dtype = compute_dtype(variable.dtype)
            if dtype not in casts:
                casts[dtype] = (tf.cast(weight_decay, dtype), tf.cast(learning_rate, dtype), dtype)
            if strategy is None:
                _decay(variable, *casts[dtype])
            else:
                strategy.extended.update(variable, _decay, args=casts[dtype], group=False)

    # ----------------------------------------------------------------- slots
    def build(self, variables) -> None:
        """Create the slots of ``variables`` now (otherwise they are made on first apply)."""
        for position, variable in enumerate(variables):
            self._slots_of(as_tf_variable(variable, position))

    def _slots_of(self, variable: tf.Variable) -> dict:
        key = variable_key(variable)
        position = self._registry.positions.get(key)
        if position is None:
            with slot_creation_scope(variable):
                slots = {
                    name: tf.Variable(
                        tf.zeros(slot_shape_of(self, name, variable.shape), variable.dtype), trainable=False,
                        name=f"{name}_{len(self._slots)}"
                    )
                    for name in self.slot_names
                }
            position = len(self._slots)
            self._slots.append(slots)
            self._registry.positions[key] = position
            self._registry.variables.append(variable)
        return self._slots[position]

    def get_slot(self, variable, name: str) -> tf.Variable:
        """The slot ``name`` of ``variable`` (e.g. ``"m"`` of Adam)."""
        if name not in self.slot_names:
            raise KeyError(f"{type(self).__name__} has no slot {name!r}; its slots are {list(self.slot_names)}.")
        position = self._registry.positions.get(variable_key(as_tf_variable(variable, 0)))
        if position is None:
            raise KeyError(f"Variable {display_name(variable)!r} has no slots yet: build or apply to it first.")
        return self._slots[position][name]

    # ----------------------------------------------------------------- steps
    def apply_gradients(self, grads_and_vars, variables=None) -> tf.Variable:
        """Apply one step: ``apply_gradients(zip(grads, vars))`` or ``apply_gradients(grads, vars)``.

        Every argument is checked before any variable or slot changes. Inside
        ``strategy.run`` the gradients are first summed across replicas
        (see ``tfopt.integrations.distribution``). Returns ``iterations``.
        """
        outer, _AUTOGRAPH.ctx = getattr(_AUTOGRAPH, "ctx", None), ag_ctx.control_status_ctx()
        try:
            return self._apply_gradients(grads_and_vars, variables)
        finally:
            _AUTOGRAPH.ctx = outer

    @tf.autograph.experimental.do_not_convert
    def _apply_gradients(self, grads_and_vars, variables) -> tf.Variable:
        """``apply_gradients``, not converted by AutoGraph: the base's loops over variables are plain Python, and
        converting them cost most of a step's first call (trace) on many variables. The rule's own functions
        (``update``, ``step_values``, ``gradient_values``) are still converted when the caller's were (see
        ``_autograph``), so Python control flow on tensors in them keeps working in a ``tf.function``."""
        pairs = check_pairs(gradient_variable_pairs(grads_and_vars, variables))
        strategy = current_strategy(self, [v for _, v in pairs])
        if strategy is None:
            return self._apply(None, pairs)
        grads = all_reduce_sum([g for g, _ in pairs])
        # Clipped here, in each replica, on the all-reduced gradients (equal on every replica): in the merge
        # call they are per-replica values, which the global norm cannot stack.
        grads = clip_gradients([_dedupe(g) if isinstance(g, tf.IndexedSlices) else g for g in grads],
                               self.clipnorm, self.clipvalue, self.global_clipnorm)
        pairs = list(zip(grads, [v for _, v in pairs]))
        return tf.__internal__.distribute.interim.maybe_merge_call(self._apply, strategy, pairs)

    def _apply(self, strategy, pairs: list[tuple]) -> tf.Variable:
        """The step itself; with a ``strategy``, in its cross-replica context."""
        grads = [g for g, _ in pairs]
        if strategy is None:  # (under a strategy: done in each replica, see _apply_gradients)
            grads = clip_gradients([_dedupe(g) if isinstance(g, tf.IndexedSlices) else g for g in grads],
                                   self.clipnorm, self.clipvalue, self.global_clipnorm)
        step = self.iterations + 1
        scalars = self._step_inputs(self._hyperparameter_values(step), tf.cast(step, tf.float64))
        items = [(grad, variable, self._slots_of(variable)) for grad, (_, variable) in zip(grads, pairs)]
        self._stepped = True
        self._apply_weight_decay(strategy, [v for _, v in pairs], scalars)  # as Keras: before the update
        # (under a strategy the all-reduced gradients are equal on every replica: the hook reads the first copy)
        local = grads if strategy is None else [strategy.experimental_local_results(g)[0] for g in grads]
        scalars.update(_autograph(self.gradient_values)(local, [v for _, v in pairs], **scalars))
        cast_cache = {}

        def cast_scalars(dtype):
            if dtype not in cast_cache:
                cast_cache[dtype] = {k: tf.cast(v, dtype) for k, v in scalars.items()}
            return cast_cache[dtype]

        if strategy is None:
            items = self._apply_native(items, cast_scalars)
        for grad, variable, variable_slots in items:
            dtype = compute_dtype(variable.dtype)
            rest = (variable_slots, cast_scalars(dtype), dtype)
            if strategy is None:
                self._apply_one(grad, variable, *rest)
            else:  # update() calls the function with each replica's copy of the variable first
                strategy.extended.update(variable, lambda v, g, *r: self._apply_one(g, v, *r), args=(grad, *rest),
                                         group=False)
        self.iterations.assign_add(1)
        return self.iterations

    def _apply_native(self, items: list[tuple], cast_scalars) -> list[tuple]:
        """Update the variables a native multi-tensor op can take, one op per dtype and device; return the others.

        A built-in's hand-written op (``_apply_multi``), else the op the rule compiler derives from ``update``
        (``tfopt.kernels.compiler``), which declines rules it cannot run with the same bits.
        """
        if self.fused is False:
            return items
        if self._apply_multi is None:
            return self._apply_compiled(items, cast_scalars)
        if self.fused and not self._fused_is_exact:
            return items
        groups, rest = {}, []
        for grad, variable, slots in items:
            native = native_kernels.takes(variable) and not (
                isinstance(grad, tf.IndexedSlices) and (self._update_sparse is not None or self.lazy))
            if native and all(s.shape.rank == 0 for s in cast_scalars(variable.dtype).values()):
                groups.setdefault((variable.dtype, variable.device), []).append((grad, variable, slots))
            else:
                rest.append((grad, variable, slots))
        if not groups:
            return items
        apply_multi = self._apply_multi
        if not native_kernels.usable():  # native ops off: the optimizer's exact fallback, if it has one
            if self._apply_fallback is None or native_kernels.in_xla_context():
                return items
            apply_multi = self._apply_fallback
        for (dtype, device), group in groups.items():
            grads = [tf.cast(tf.convert_to_tensor(g), dtype) if g.dtype != dtype or isinstance(g, tf.IndexedSlices)
                     else g for g, _, _ in group]
            with tf.device(device):  # an op runs where its variables live
                apply_multi([v for _, v, _ in group], grads, [s for _, _, s in group], **cast_scalars(dtype))
        return rest

    def _apply_compiled(self, items: list[tuple], cast_scalars) -> list[tuple]:
        """``_apply_native`` with the compiled rule: dense gradients of variables ``compiler.takes``, one op per
        dtype and device; the rest (sparse gradients, declined rules, per-row hyperparameters) is returned."""
        if self.fused and self._apply_fused is not None:  # fused=True asks for that kernel
            return items
        groups, rest = {}, []
        for grad, variable, slots in items:
            dtype = compute_dtype(variable.dtype)
            if (compiler.takes(variable) and not isinstance(grad, tf.IndexedSlices)
                    and all(s.shape.rank == 0 for s in cast_scalars(dtype).values())):
                groups.setdefault((variable.dtype, variable.device), []).append((grad, variable, slots))
            else:
                rest.append((grad, variable, slots))
        if not groups or not native_kernels.usable():
            return items
        for (dtype, device), group in groups.items():
            scalars = cast_scalars(compute_dtype(dtype))
            rule = compiler.rule_for(self, compute_dtype(dtype), scalars)
            if rule is None:
                rest += group
                continue
            grads = [g if g.dtype == rule.dtype else tf.cast(g, rule.dtype) for g, _, _ in group]
            with tf.device(device):  # an op runs where its variables live
                compiler.apply(rule, [v for _, v, _ in group], [s for _, _, s in group], grads, scalars)
        return rest

    def _hyperparameter_values(self, step: tf.Tensor) -> dict[str, tf.Tensor]:
        cls = type(self)
        return {name: getattr(cls, name).value_at(self, step) for name in self._hyper}

    def _step_inputs(self, hyper: dict[str, tf.Tensor], step: tf.Tensor) -> dict[str, tf.Tensor]:
        """The float64 scalars of step ``step``: hyperparameters, ``step``, and what ``step_values`` adds."""
        return {**hyper, "step": step, **_autograph(self.step_values)(step=step, **hyper)}

    def _apply_one(self, grad, variable: tf.Variable, slots: dict, scalars: dict, dtype: tf.DType) -> None:
        """Update one variable (and its slots) in ``dtype`` arithmetic, rounding once to the variable's dtype."""
        if isinstance(grad, tf.IndexedSlices):
            if ((self.lazy or self._update_sparse is not None and not slots)
                    and all(s.shape.rank == 0 for s in scalars.values())):
                self._apply_sparse(grad, variable, slots, scalars, dtype)
                return
            grad = tf.convert_to_tensor(grad)
        if self._uses_fused(variable, scalars):
            self._apply_fused(grad if grad.dtype == dtype else tf.cast(grad, dtype), variable, slots, **scalars)
            return
        state = {name: tf.cast(tf.convert_to_tensor(slot), dtype) for name, slot in slots.items()}
        param = tf.cast(tf.convert_to_tensor(variable), dtype)
        delta, new_state = _autograph(self.update)(tf.cast(grad, dtype), state, param=param, **scalars)
        _check_new_slots(self, new_state)
        for name, slot in slots.items():
            slot.assign(tf.cast(new_state[name], slot.dtype))
        if dtype == variable.dtype:
            variable.assign_sub(delta)
        else:  # half precision: subtract in float32, round once
            variable.assign(tf.cast(tf.cast(variable, dtype) - delta, variable.dtype))

    def _apply_sparse(self, grad: tf.IndexedSlices, variable: tf.Variable, slots: dict, scalars: dict,
                      dtype: tf.DType) -> None:
        """Update only the rows ``grad`` touches (its indices are unique), without a dense gradient; a ``lazy``
        rule runs ``update`` on those rows of the variable and its slots and only they are written back."""
        if self.lazy:
            state = {name: tf.cast(tf.gather(slot, grad.indices), dtype) for name, slot in slots.items()}
            param = tf.cast(tf.gather(variable, grad.indices), dtype)
            delta, new_state = _autograph(self.update)(tf.cast(grad.values, dtype), state, param=param, **scalars)
            _check_new_slots(self, new_state)
            for name, slot in slots.items():
                slot.scatter_update(tf.IndexedSlices(tf.cast(new_state[name], slot.dtype), grad.indices))
        else:
            delta = self._update_sparse(tf.cast(grad.values, dtype), **scalars)
        if dtype == variable.dtype:
            variable.scatter_sub(tf.IndexedSlices(delta, grad.indices, grad.dense_shape))
        else:
            rows = tf.cast(tf.gather(variable, grad.indices), dtype) - delta
            variable.scatter_update(tf.IndexedSlices(tf.cast(rows, variable.dtype), grad.indices, grad.dense_shape))

    def _uses_fused(self, variable: tf.Variable, scalars: dict) -> bool:
        wanted = self._fused_is_exact if self.fused is None else self.fused
        return wanted and self._apply_fused is not None and fused_kernels.applies(variable, scalars)

    # ------------------------------------------------- what subclasses define
    _update_sparse = None
    """Optional, slot-less optimizers only: ``values -> delta values`` for touched rows."""

    lazy = False
    """Whether ``tf.IndexedSlices`` gradients update only the rows they touch, of the variable and of every
    slot (``LazyAdam``): ``update`` then runs on those rows alone (``grad``, ``slots`` and ``param`` gathered at
    the indices) and its results are scattered back; other rows, and their slots, do not change. False: sparse
    gradients are densified, so a step with them equals the dense step."""

    _apply_fused = None
    """Optional: ``(grad, variable, slots, **scalars)`` applies the step in place with a fused kernel."""

    _apply_multi = None
    """Optional: ``(variables, grads, slots, **scalars)`` steps all the variables at once with a native op
    (``tfopt.kernels.native``); it must reproduce ``_update`` bit for bit."""

    _apply_fallback = None
    """Optional: like ``_apply_multi``, with TensorFlow's ops, when the native ops are off (``tfopt.kernels.fallback``);
    it must reproduce ``_update`` bit for bit."""

    _fused_is_exact = False
    """Whether ``_apply_fused`` reproduces ``_update`` bit for bit (then it is the default)."""

    # slot_shape(self, name, variable_shape) -> shape: optional, not defined here (the conformance kit checks slot
    # shapes only for rules without it). The shape of slot ``name`` of a variable of ``variable_shape`` (a
    # ``tf.TensorShape``) where it is not the variable's (Adafactor's factored row and column moments); the dtype
    # stays the variable's. Used wherever slots are made (``build``/first apply, ``as_keras``'s ``build``).

    def step_values(self, *, step: tf.Tensor, **hyperparameters) -> dict[str, tf.Tensor]:
        """Optional: values computed once per step (float64 scalars), added to ``update``'s inputs.

        ``step`` is t (counted from 1) and ``hyperparameters`` this step's values, all float64;
        e.g. Adam's bias corrections ``{"correction_1": 1 - beta_1**step, ...}``.
        """
        return {}

    def gradient_values(self, grads: list, variables: list, **inputs) -> dict[str, tf.Tensor]:
        """Optional: values of this step computed from every variable's gradient at once (a global norm, say).

        ``grads`` are the call's gradients after clipping (and, under ``tf.distribute``, the all-reduce;
        ``tf.IndexedSlices`` for sparse ones), ``variables`` their variables, ``inputs`` this step's
        float64 scalars (hyperparameters, ``step``, ``step_values()``). The values returned (scalars)
        are added to every variable's ``update`` inputs, like ``step_values``'s.
        """
        return {}

    def _reads_every_gradient(self) -> bool:
        """Whether a variable's step depends on other variables' gradients (the rule has ``gradient_values``)."""
        return type(self).gradient_values is not Optimizer.gradient_values

    def update(self, grad: tf.Tensor, slots: dict[str, tf.Tensor], **inputs) -> tuple[tf.Tensor, dict]:
        """One variable's update, pure: return ``(delta, new_slots)``; the base applies ``x <- x - delta``.

        ``slots`` maps each of ``slot_names`` to its current value; ``new_slots`` must have them all.
        ``inputs``: ``learning_rate``, every hyperparameter, ``step``, ``param`` and ``step_values()``,
        as tensors in the variable's compute dtype. Take what you use and ``**_`` for the rest.
        """
        raise NotImplementedError(f"{type(self).__name__} must define update(self, grad, slots, **inputs).")


_AUTOGRAPH = threading.local()
"""``ctx``: AutoGraph's status where the current ``apply_gradients`` was called (``None`` outside one)."""


def _autograph(function):
    """``function``, converted by AutoGraph if the step's caller was (a ``tf.function``'s code, by default), as
    AutoGraph converts every function that converted code calls; ``function`` itself otherwise."""
    ctx = getattr(_AUTOGRAPH, "ctx", None) or ag_ctx.control_status_ctx()
    if ctx.status != ag_ctx.Status.ENABLED:
        return function
    return ag_api.tf_convert(function, ctx)


def slot_shape_of(optimizer: Optimizer, name: str, variable_shape) -> tf.TensorShape:
    """The shape of slot ``name`` of a variable of ``variable_shape``: the rule's ``slot_shape``, else its own."""
    variable_shape = tf.TensorShape(variable_shape)
    hook = getattr(optimizer, "slot_shape", None)
    return variable_shape if hook is None else tf.TensorShape(hook(name, variable_shape))


_FAST_PATHS = frozenset({"_apply_multi", "_apply_fused", "_apply_fallback", "_update_sparse"})
"""What a built-in defines beside ``update`` to step faster with the same numbers."""
_MATH = frozenset({"update", "step_values", "gradient_values"})
"""What defines a rule's numbers."""


def _check_new_slots(optimizer: Optimizer, new_slots) -> None:
    """``update`` must return every slot (and only those): a rule that forgets one would silently keep it."""
    if set(new_slots) != set(optimizer.slot_names):
        raise ValueError(f"{type(optimizer).__name__}.update returned slots {sorted(new_slots)}; "
                         f"it must return exactly its slot_names {sorted(optimizer.slot_names)}.")


_KEYWORDS = ("fused", "clipnorm", "clipvalue", "global_clipnorm", "name", "weight_decay")
"""The base constructor's keyword options, after the declared arguments."""


def _declared(cls) -> list:
    """The constructor's arguments, in order: the learning rate, other hyperparameters, options."""
    return declared(cls, first="learning_rate")


def _arguments(cls, args: tuple, kwargs: dict) -> list[tuple]:
    """``(declaration, value)`` for each declared argument (see ``tfopt.core.hyperparameters.arguments``)."""
    return arguments(cls, _declared(cls), args, kwargs, _KEYWORDS)


def _signature(cls) -> inspect.Signature:
    """What ``help(cls)`` and IDEs show: the declared arguments, then the base's keyword options."""
    return signature(_declared(cls), _KEYWORDS)

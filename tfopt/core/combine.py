"""Composition (as in Optax's combine.py): ``tfopt.chain``, an optimizer made of transforms (``tfopt.transforms``).

    adamw = tfopt.chain(
        tfopt.transforms.clip_by_global_norm(1.0),
        tfopt.transforms.scale_by_adam(beta_1=0.9, beta_2=0.999, epsilon=1e-7),
        tfopt.transforms.add_decayed_weights(1e-2),
        tfopt.transforms.scale_by_learning_rate(1e-3),
    )
    adamw.apply_gradients(zip(grads, variables))

For each variable the gradient goes through the transforms in order, each mapping its input ``u``
to its output; the last output is ``delta`` and ``x <- x - delta``. A ``Chain`` is a
``tfopt.Optimizer`` (the plain-ops path): slots, checkpoints, ``tf.function``/XLA, half precision,
sparse gradients (densified), clipping, ``tf.distribute``, ``convergence_test`` and ``as_keras()``.

* Slots: each transform's, named ``<transform name>_<slot>`` (``scale_by_adam_m``); a name used twice
  in one chain gets a suffix (``scale``, ``scale_1``).
* Hyperparameters belong to the transforms: ``chain.transforms[1].beta_1 = 0.8`` takes effect on the
  next step without retracing. ``chain.learning_rate`` is that of the last transform declaring a
  ``learning_rate`` (``scale_by_learning_rate``).
* A transform with a ``reduce`` (``clip_by_global_norm``) gets its input for every variable of the
  call at once, through the base's ``gradient_values`` hook; when other transforms come before it,
  their outputs are computed twice (once for the reduction, once in the step), with the same ops.
* ``get_config()`` is plain data when the hyperparameters are numbers: the transforms as
  ``{"class": "module:QualName", "config": {...}}``, found again by ``Chain.from_config``.
"""

from __future__ import annotations

import inspect

import tensorflow as tf

from tfopt.core.hyperparameters import Hyperparameter, class_path, import_class
from tfopt.core.optimizer import Optimizer, compute_dtype
from tfopt.core.transforms import Transform, reduces

__all__ = ["Chain", "chain"]

_FROM_TRANSFORMS = object()
"""The base constructor's learning rate for a chain: keep the transforms' own."""

_REDUCED = "reduced:"
"""Prefix of the inputs a chain's ``gradient_values`` computed with a transform's ``reduce``."""


class _ChainLearningRate(Hyperparameter):
    """``Chain.learning_rate``: reads and writes the learning rate of the chain's learning-rate transform."""

    def __init__(self):
        super().__init__(_FROM_TRANSFORMS, schedulable=True)

    def __get__(self, chain, owner=None):
        if chain is None:
            return self
        return chain._learning_rate_transform(required=True).learning_rate

    def __set__(self, chain, value) -> None:
        if value is _FROM_TRANSFORMS:  # the base constructor's default
            return
        chain._learning_rate_transform(required=True).learning_rate = value


def import_transform(path: str) -> type:
    """The ``Transform`` subclass named ``module:QualName``; ``ValueError`` saying why not."""
    return import_class(path, Transform, "transform", "tfopt.transforms.Transform")


def _labels(transforms) -> tuple[str, ...]:
    """Each transform's name, made unique in the chain by a suffix (``scale``, ``scale_1``)."""
    labels = []
    for transform in transforms:
        label, count = transform.name, 0
        while label in labels:
            count += 1
            label = f"{transform.name}_{count}"
        labels.append(label)
    return tuple(labels)


class Chain(Optimizer):
    """An optimizer that applies ``transforms`` in order: ``x <- x - T_n(...T_1(g))``.

    Args:
      *transforms: ``tfopt.transforms.Transform`` instances (at least one).
      clipnorm, clipvalue, global_clipnorm: optional clipping of the gradients before the first
        transform, as for every optimizer.
      name: the module name (default ``"chain"``).
    """

    learning_rate = _ChainLearningRate()

    def __init__(self, *transforms: Transform, clipnorm=None, clipvalue=None, global_clipnorm=None, name=None,
                 weight_decay=None):
        if len(transforms) == 1 and isinstance(transforms[0], (list, tuple)):
            transforms = tuple(transforms[0])
        if not transforms:
            raise ValueError("A chain needs at least one transform, e.g. "
                             "tfopt.chain(tfopt.transforms.scale_by_learning_rate(0.1)).")
        for position, transform in enumerate(transforms):
            if not isinstance(transform, Transform):
                hint = " (a class: call it)" if isinstance(transform, type) else ""
                raise TypeError(f"Transform {position} of the chain is {transform!r}{hint}, not a "
                                "tfopt.transforms.Transform instance.")
        super().__init__(clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm,
                         name=name or "chain", weight_decay=weight_decay)
        self.transforms = tuple(transforms)
        self._labels = _labels(transforms)
        self.slot_names = tuple(f"{label}_{slot}" for label, t in zip(self._labels, transforms)
                                for slot in t.slot_names)
        if len(set(self.slot_names)) != len(self.slot_names):
            raise ValueError(f"The transforms' slot names collide: {list(self.slot_names)}; rename a transform "
                             "with name=.")

    def _learning_rate_transform(self, required: bool = False) -> Transform | None:
        """The last transform that declares a ``learning_rate`` (``scale_by_learning_rate``)."""
        for transform in reversed(getattr(self, "transforms", ())):
            if isinstance(getattr(type(transform), "learning_rate", None), Hyperparameter):
                return transform
        if required:
            raise AttributeError("This chain has no learning rate: none of its transforms declares one; add "
                                 "tfopt.transforms.scale_by_learning_rate(...).")
        return None

    # ---------------------------------------------------------------- config
    def get_config(self) -> dict:
        """Plain data (when the hyperparameters are numbers): clipping, the learning rate (if the chain has
        one; ``from_config`` applies it to that transform) and each transform's class path and config."""
        config = {"name": self.name, "clipnorm": self.clipnorm, "clipvalue": self.clipvalue,
                  "global_clipnorm": self.global_clipnorm}
        if self._learning_rate_transform() is not None:
            config["learning_rate"] = self._learning_rate_transform().get_config()["learning_rate"]
        if self.weight_decay is not None:
            config["weight_decay"] = float(self.weight_decay.numpy())
        config["transforms"] = [{"class": class_path(type(t)), "config": t.get_config()} for t in self.transforms]
        return config

    @classmethod
    def from_config(cls, config: dict) -> Chain:
        """A new chain, without state, from ``get_config()``; a top-level ``learning_rate`` overrides the
        learning-rate transform's."""
        config = dict(config)
        learning_rate = config.pop("learning_rate", _FROM_TRANSFORMS)
        transforms = [entry if isinstance(entry, Transform) else import_transform(entry["class"]).from_config(
            dict(entry.get("config", {}))) for entry in config.pop("transforms", ())]
        chain = cls(*transforms, **config)
        chain.learning_rate = learning_rate
        return chain

    # -------------------------------------------------------------- the step
    def _parts(self):
        return zip(self._labels, self.transforms)

    def _hyperparameter_values(self, step: tf.Tensor) -> dict[str, tf.Tensor]:
        return {f"{label}/{name}": getattr(type(t), name).value_at(t, step)
                for label, t in self._parts() for name in t._hyper}

    def _step_inputs(self, hyper: dict[str, tf.Tensor], step: tf.Tensor) -> dict[str, tf.Tensor]:
        """Each transform's hyperparameters and ``step_values``, keyed ``<label>/<name>``, and ``step``.

        A ``learning_rate`` in ``hyper`` (the Keras adapter passes Keras's) goes to the learning-rate
        transform; hyperparameters missing from ``hyper`` are read from the transforms.
        """
        hyper = dict(hyper)
        learning_rate = hyper.pop("learning_rate", None)
        learning_rate_transform = self._learning_rate_transform()
        inputs = {"step": step}
        for label, t in self._parts():
            own = {name: hyper[f"{label}/{name}"] if f"{label}/{name}" in hyper
                   else getattr(type(t), name).value_at(t, step) for name in t._hyper}
            if learning_rate is not None and t is learning_rate_transform:
                own["learning_rate"] = learning_rate
            own.update(t.step_values(step=step, **own))
            inputs.update({f"{label}/{name}": value for name, value in own.items()})
        return inputs

    def _reads_every_gradient(self) -> bool:
        """Only when a transform has ``reduce`` (e.g. ``clip_by_global_norm``)."""
        return any(reduces(t) for t in self.transforms)

    def gradient_values(self, grads: list, variables: list, **inputs) -> dict[str, tf.Tensor]:
        """What the transforms' ``reduce`` compute from their inputs of every variable (e.g. the global norm)."""
        indices = [i for i, t in enumerate(self.transforms) if reduces(t)]
        if not indices:
            return {}
        found, last = {}, indices[-1]
        us = [tf.convert_to_tensor(g) for g in grads]
        us = [tf.cast(u, compute_dtype(v.dtype)) for u, v in zip(us, variables)]
        states = params = None
        for index, (label, t) in enumerate(self._parts()):
            if index > last:
                break
            if index in indices:
                own = _own_inputs(inputs, label)
                values = t.reduce(us, **own)
                inputs = {**inputs, **{f"{_REDUCED}{label}/{k}": v for k, v in values.items()}}
                found.update({f"{_REDUCED}{label}/{k}": v for k, v in values.items()})
            if index < last:  # the inputs of the next transform: run this one on every variable (results only)
                if states is None:
                    states = [self._slot_values(v) for v in variables]
                    params = [tf.cast(tf.convert_to_tensor(v), compute_dtype(v.dtype)) for v in variables]
                us = [self._transform(index, u, state, param, {k: tf.cast(x, u.dtype) for k, x in inputs.items()})[0]
                      for u, state, param in zip(us, states, params)]
        return found

    def _slot_values(self, variable) -> dict[str, tf.Tensor]:
        dtype = compute_dtype(variable.dtype)
        return {name: tf.cast(tf.convert_to_tensor(self.get_slot(variable, name)), dtype) for name in self.slot_names}

    def _transform(self, index: int, u, slots: dict, param, inputs: dict) -> tuple[tf.Tensor, dict]:
        """Transform ``index`` on one variable: its output and its new slots (chain names)."""
        label, t = self._labels[index], self.transforms[index]
        own = _own_inputs(inputs, label)
        if reduces(t) and not any(key.startswith(f"{_REDUCED}{label}/") for key in inputs):
            raise ValueError(f"{label} ({type(t).__name__}) reduces over all the variables, but the caller of "
                             "update did not compute Chain.gradient_values first (apply_gradients does).")
        out, new_slots = t.update(u, {name: slots[f"{label}_{name}"] for name in t.slot_names},
                                  step=inputs["step"], param=param, **own)
        if set(new_slots) != set(t.slot_names):
            raise ValueError(f"{type(t).__name__}.update returned slots {sorted(new_slots)}; it must return exactly "
                             f"its slot_names {sorted(t.slot_names)}.")
        return out, {f"{label}_{name}": value for name, value in new_slots.items()}

    def update(self, grad, slots, *, param, **inputs):
        """The transforms in turn on one variable; the last output is the step."""
        u, new_slots = grad, {}
        for index in range(len(self.transforms)):
            u, new = self._transform(index, u, slots, param, inputs)
            new_slots.update(new)
        return u, new_slots


def _own_inputs(inputs: dict, label: str) -> dict:
    """The inputs of the transform ``label``, without their prefix."""
    own = {}
    for key, value in inputs.items():
        name = key[len(_REDUCED):] if key.startswith(_REDUCED) else key
        prefix, slash, rest = name.partition("/")
        if slash and prefix == label:
            own[rest] = value
    return own


Chain.__signature__ = inspect.Signature(list(inspect.signature(Chain.__init__).parameters.values())[1:])


def chain(*transforms: Transform, clipnorm=None, clipvalue=None, global_clipnorm=None, name=None,
          weight_decay=None) -> Chain:
    """An optimizer applying ``transforms`` in order (see ``tfopt.Chain`` and ``tfopt.transforms``)::

        tfopt.chain(tfopt.transforms.scale_by_adam(), tfopt.transforms.scale_by_learning_rate(1e-3))
    """
    return Chain(*transforms, clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm, name=name,
                 weight_decay=weight_decay)

"""Per-step training diagnostics: learning rate, update norm, update-to-weight ratio per layer, slot statistics.

What a step did, measured from the weights themselves (so it works for any
optimizer, clipping and weight decay included): the weights are copied before
the step, and after it

* ``learning_rate``: the learning rate of the step (a schedule's value at it);
* ``update_norm``: the global norm of the update, ``||delta||_2`` over every
  variable, where ``delta = w_before - w_after``;
* ``update_to_weight/<layer>``: ``||delta_layer||_2 / ||w_layer||_2`` (before the
  step) over the layer's variables: about 1e-3 is the usual healthy size; much
  larger means the layer is thrashing, much smaller that it hardly learns.
  NaN for a layer whose weights are all zero (a fresh bias);
* ``slot_rms/<kind>``: the root mean square of every slot of that kind (Adam's
  ``m`` and ``v``, Keras's ``momentum`` and ``velocity``), over all variables.

A variable's layer is its Keras path without the last part and, when a model is
given, without the model's name (``sequential/dense/kernel`` -> ``dense``); its
name for a plain ``tf.Variable``. The step number is the
optimizer's ``iterations`` after the step.

Each recorded step is a row of ``Diagnostics.rows`` (kept in memory, for a
report) and, with ``logdir``, TensorBoard scalars under the same names (written
with TensorFlow alone: TensorBoard is needed only to look at them).
Two ways in:

* a custom loop: ``diag = Diagnostics(model, optimizer, logdir)``, then
  ``with diag.step(): optimizer.apply_gradients(...)`` (or a compiled train step:
  the copies are made eagerly around it);
* ``model.fit(..., callbacks=[DiagnosticsCallback(logdir)])`` with a Keras optimizer
  or a tfopt optimizer's ``as_keras()``; its ``.diagnostics`` holds the rows.

``plot_diagnostics`` draws the four quantities against the step. The copies cost
one read of every weight per recorded step: ``every=k`` records every k-th step only.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfopt.core.variables import as_tf_variable, display_name

__all__ = ["Diagnostics", "DiagnosticsCallback", "plot_diagnostics", "train_with_diagnostics"]


class Diagnostics:
    """Records what each optimizer step did to the weights; see the module docstring.

    Args:
      variables: a Keras model (its ``trainable_variables`` are read at every step, so a model
        built lazily works), or a list of variables (``tf.Variable`` or Keras).
      optimizer: a ``tfopt.Optimizer``, or a Keras optimizer (``as_keras()`` ones included).
      logdir: write TensorBoard summaries there (``tf.summary.create_file_writer``); None: memory only.
      every: record every ``every``-th step (counted in calls of ``step``/``before``).
    """

    def __init__(self, variables, optimizer, logdir: str | os.PathLike | None = None, *, every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}.")
        if not hasattr(optimizer, "iterations"):
            raise TypeError(f"optimizer must be a tfopt or Keras optimizer, not {type(optimizer).__name__}.")
        self._source = variables
        self.optimizer = optimizer
        self.every = every
        self.rows: list[dict] = []
        self.writer = None if logdir is None else tf.summary.create_file_writer(os.fspath(logdir))
        self._calls = 0
        self._before = None
        self._model_name = getattr(variables, "name", None) if hasattr(variables, "trainable_variables") else None
        _ = self.variables  # checks the variables now, naming a bad one

    @property
    def variables(self) -> list:
        """The ``tf.Variable``s watched (a model's trainable variables as they are now)."""
        source = self._source
        found = source.trainable_variables if hasattr(source, "trainable_variables") else list(source)
        return [as_tf_variable(v, i) for i, v in enumerate(found)]

    # ----------------------------------------------------------------- steps
    @contextlib.contextmanager
    def step(self):
        """``with diag.step(): <one optimizer step>``: copies the weights before, records the row after."""
        self.before()
        yield self
        self.after()

    def before(self) -> None:
        """Copy the weights and read the learning rate, before a step (every ``every``-th call)."""
        self._calls += 1
        if (self._calls - 1) % self.every:
            self._before = None
            return
        variables = self.variables
        self._before = (variables, [_numpy(v) for v in variables], _learning_rate(self.optimizer))

    def after(self, **scalars: float) -> dict | None:
        """Measure the step just taken; returns its row (None on a step not recorded).

        ``scalars``: more numbers for the row and TensorBoard (e.g. ``loss=...``).
        """
        if self._before is None:
            return None
        variables, before, learning_rate = self._before
        self._before = None
        row = {"step": int(self.optimizer.iterations.numpy()), "learning_rate": learning_rate}
        row.update(update_statistics(variables, before, [_numpy(v) for v in variables], self._model_name))
        row.update({f"slot_rms/{kind}": value for kind, value in slot_rms(self.optimizer, variables).items()})
        row.update({name: float(value) for name, value in scalars.items()})
        self.rows.append(row)
        if self.writer is not None:
            with self.writer.as_default(step=row["step"]):
                for name, value in row.items():
                    if name != "step":
                        write_scalar(_tag(name), value)
        return row

    def flush(self) -> None:
        """Write pending TensorBoard events to disk."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    # ----------------------------------------------------------------- table
    def columns(self) -> dict[str, np.ndarray]:
        """The rows as columns: name -> float64 array over the recorded steps (NaN where a row lacks it)."""
        names = list(dict.fromkeys(name for row in self.rows for name in row))
        return {name: np.array([row.get(name, math.nan) for row in self.rows], dtype=np.float64) for name in names}


class DiagnosticsCallback(keras.callbacks.Callback):
    """``model.fit(..., callbacks=[DiagnosticsCallback(logdir)])``: a ``Diagnostics`` row per training batch.

    Works with any Keras optimizer, including a tfopt optimizer's ``as_keras()``. With
    ``steps_per_execution > 1`` Keras calls batch callbacks once per execution, so a row then covers
    that many steps. ``self.diagnostics`` (made when training begins; kept across ``fit`` calls)
    holds the rows.
    """

    def __init__(self, logdir: str | os.PathLike | None = None, *, every: int = 1):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}.")
        self.logdir, self.every = logdir, every
        self.diagnostics: Diagnostics | None = None

    def on_train_begin(self, logs=None):
        if self.diagnostics is None or self.diagnostics.optimizer is not self.model.optimizer:
            self.diagnostics = Diagnostics(self.model, self.model.optimizer, self.logdir, every=self.every)

    def on_train_batch_begin(self, batch, logs=None):
        self.diagnostics.before()

    def on_train_batch_end(self, batch, logs=None):
        self.diagnostics.after()

    def on_train_end(self, logs=None):
        self.diagnostics.flush()


def train_with_diagnostics(model, optimizer, batches, loss_fn, logdir: str | os.PathLike | None = None, *,
                           every: int = 1) -> Diagnostics:
    """Train ``model`` with ``optimizer`` on ``batches``, one compiled step per batch, recording each step.

    A convenience for reports: ``loss_fn(model, x, y)`` returns the scalar loss of a batch; each step
    is ``optimizer.apply_gradients(zip(grads, model.trainable_variables))`` in one ``tf.function``
    (traced once for batches of one shape), inside ``Diagnostics.step()``. Stops early, after recording
    it, at a step whose loss is not finite. Returns the ``Diagnostics`` (its writer flushed); each row
    also has the step's ``loss``.
    """
    variables = model.trainable_variables
    diagnostics = Diagnostics(model, optimizer, logdir, every=every)

    @tf.function(autograph=False)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(model, x, y)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    for x, y in batches:
        diagnostics.before()
        loss = float(train_step(tf.convert_to_tensor(x), tf.convert_to_tensor(y)))
        diagnostics.after(loss=loss)
        if not math.isfinite(loss):
            break
    diagnostics.flush()
    return diagnostics


# ---------------------------------------------------------------- measures
def update_statistics(variables: Sequence, before: Sequence[np.ndarray], after: Sequence[np.ndarray],
                      model_name: str | None = None) -> dict:
    """``update_norm`` and ``update_to_weight/<layer>`` from the weights before and after a step (float64).

    ``update_norm = sqrt(sum_i ||b_i - a_i||^2)``; per layer L,
    ``||delta_L|| / ||w_L||`` with ``||x_L||^2 = sum_{i in L} ||x_i||^2`` over the weights before
    the step (NaN if that is 0).
    """
    layers: dict[str, list[float]] = {}
    total = 0.0
    for variable, b, a in zip(variables, before, after):
        delta = float(np.sum(np.square(b - a)))
        total += delta
        sums = layers.setdefault(layer_of(variable, model_name), [0.0, 0.0])
        sums[0] += delta
        sums[1] += float(np.sum(np.square(b)))
    out = {"update_norm": math.sqrt(total)}
    for layer, (delta, weight) in layers.items():
        out[f"update_to_weight/{layer}"] = math.sqrt(delta / weight) if weight > 0 else math.nan
    return out


def slot_rms(optimizer, variables: Sequence) -> dict[str, float]:
    """``{kind: sqrt(mean(s^2))}`` over every slot of each kind (every variable's ``m``, ...); {} if none yet."""
    squares: dict[str, list[float]] = {}
    for kind, slot in _slots(optimizer, variables):
        value = _numpy(slot)
        sums = squares.setdefault(kind, [0.0, 0])
        sums[0] += float(np.sum(np.square(value)))
        sums[1] += value.size
    return {kind: math.sqrt(total / count) if count else math.nan for kind, (total, count) in squares.items()}


def layer_of(variable, model_name: str | None = None) -> str:
    """A variable's layer: its Keras path (or TF name, without ``:0``) up to the last ``/``, without the
    leading ``<model_name>/`` (``sequential/hidden/kernel`` -> ``hidden``)."""
    name = display_name(variable).split(":")[0]
    if model_name and name.startswith(f"{model_name}/") and name.count("/") > 1:
        name = name[len(model_name) + 1:]
    return name.rsplit("/", 1)[0] if "/" in name else name


def write_scalar(tag: str, value: float, step=None) -> None:
    """Write a scalar summary TensorBoard's scalars dashboard shows, without needing TensorBoard installed.

    ``tf.summary.scalar`` lives in the ``tensorboard`` package; this writes the same record with
    TensorFlow alone: a float32 scalar tensor tagged with the ``scalars`` plugin (content empty,
    version 0), to the default writer at ``step`` (default: the writer's).
    """
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=metadata.SerializeToString())


def _numpy(variable) -> np.ndarray:
    return np.array(tf.convert_to_tensor(variable).numpy(), dtype=np.float64)


def _tag(name: str) -> str:
    return re.sub(r"[^\w./-]", "_", name)


def _learning_rate(optimizer) -> float:
    """The learning rate the optimizer's next step uses (NaN if it has none)."""
    from tfopt.core.optimizer import Optimizer

    if isinstance(optimizer, Optimizer):
        values = optimizer._hyperparameter_values(optimizer.iterations + 1)
        found = [v for k, v in values.items() if k == "learning_rate" or k.endswith("/learning_rate")]
        if found:
            return float(found[-1].numpy())
        inner = getattr(optimizer, "inner_optimizer", None)  # a wrapper (Lookahead, ...): its rule's next step
        return _learning_rate(inner) if inner is not None else math.nan
    value = getattr(optimizer, "learning_rate", None)  # Keras: the value at its current iterations
    return math.nan if value is None else float(np.asarray(tf.convert_to_tensor(value)))


def _slots(optimizer, variables):
    """(kind, slot variable) pairs of ``variables`` for a tfopt or a Keras optimizer."""
    from tfopt.core.optimizer import Optimizer

    if isinstance(optimizer, Optimizer):
        for variable in variables:
            for kind in getattr(optimizer, "slot_names", ()):
                try:
                    yield kind, optimizer.get_slot(variable, kind)
                except KeyError:  # no slots yet
                    break
        return
    slot_lists = getattr(optimizer, "_slot_lists", None)  # tfopt's KerasOptimizer (factored slots included)
    if slot_lists is not None:
        for kind, slots in slot_lists.items():
            for slot in slots:
                yield kind, slot
        return
    # A Keras optimizer names a slot "<variable path with _>_<kind>": match the longest variable prefix.
    prefixes = sorted((display_name(v).split(":")[0].replace("/", "_") + "_" for v in variables), key=len,
                      reverse=True)
    for slot in getattr(optimizer, "variables", ()):
        name = slot.name.split(":")[0]
        prefix = next((p for p in prefixes if name.startswith(p) and len(name) > len(p)), None)
        if prefix is not None:
            yield name[len(prefix):], slot


# ---------------------------------------------------------------- figure
def plot_diagnostics(diagnostics, axes=None, *, title: str | None = None, save=None):
    """Draw the recorded rows against the step: learning rate, update norm, update/weight per layer, slot RMS.

    One run: a colour per layer (per slot kind). Several runs (a mapping): a colour per run (named in
    the learning-rate panel's legend) and a line style per layer (per slot kind), named in grey in
    those panels' legends. The update/weight panel has a dotted line at 1e-3, the usual healthy size
    of a step.

    Args:
      diagnostics: a ``Diagnostics`` or its ``rows``, or a mapping label -> either (e.g. one per optimizer).
      axes: four Axes to draw on, in that order; a new 2 x 2 figure if None.
      title: the figure's title.
      save: optional file to write the figure to.

    Returns:
      The matplotlib Figure.
    """
    from tfopt.lab import plotting

    runs = {label: _columns(run, label) for label, run in
            (diagnostics.items() if isinstance(diagnostics, Mapping) else [("", diagnostics)])}
    if not runs:
        raise ValueError("diagnostics is an empty mapping: give at least one run.")
    fig, axes = _four_axes(axes)
    names = list(dict.fromkeys(name for columns in runs.values() for name in columns))
    several = len(runs) > 1
    panels = [("learning rate", ["learning_rate"], "log" if several else "linear"),
              ("global update norm ||Δw||", ["update_norm"], "log"),
              (RATIO_PANEL, [n for n in names if n.startswith("update_to_weight/")], "log"),
              ("slot RMS per kind", [n for n in names if n.startswith("slot_rms/")], "log")]
    run_colors = dict(zip(runs, plotting._colors(len(runs))))
    for ax, (panel, keys, scale) in zip(axes, panels):
        _draw_panel(ax, panel, keys, scale, runs, run_colors)
    if title:
        fig.suptitle(title)
    return plotting._finish(fig, save)


RATIO_PANEL = "update / weight per layer ||Δw|| / ||w||"
_LINE_STYLES = ["-", "--", ":", "-."]


def _four_axes(axes):
    if axes is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 7), layout="constrained")
        return fig, fig.subplots(2, 2).ravel()
    axes = list(axes)
    if len(axes) != 4:
        raise ValueError(f"axes must be four Axes (learning rate, update norm, ratios, slots), got {len(axes)}.")
    return axes[0].figure, axes


def _draw_panel(ax, panel: str, keys: list, scale: str, runs: dict, run_colors: dict) -> None:
    """One panel: the columns ``keys`` of every run, and its legend (see ``plot_diagnostics``)."""
    from matplotlib.lines import Line2D

    from tfopt.lab import plotting

    several = len(runs) > 1
    key_colors = dict(zip(keys, plotting._colors(len(keys))))
    # Several runs: slot kinds match by name; layers by position (models built apart number their layers apart).
    by_position = several and panel == RATIO_PANEL
    entries = {}  # position (or kind) -> (legend label, line style), named after the first run that has it
    for label, columns in runs.items():
        steps = columns["step"]
        for i, key in enumerate(k for k in keys if k in columns):
            name = key.split("/", 1)[-1]
            slot = i if by_position else keys.index(key)
            style = _LINE_STYLES[slot % len(_LINE_STYLES)]
            entries.setdefault(slot, (f"layer {i + 1}: {name}" if by_position else name, style))
            ax.plot(steps, _positive_or_nan(columns[key], scale), lw=1.5,
                    color=run_colors[label] if several else key_colors[key], ls=style if several else "-",
                    marker="." if len(steps) < 60 else None, label=None if several else name)
    handles, labels = ([], []) if several else ax.get_legend_handles_labels()
    if several and panel == "learning rate":
        handles, labels = [Line2D([], [], color=c, lw=2) for c in run_colors.values()], list(run_colors)
    elif several and keys and "/" in keys[0]:
        handles = [Line2D([], [], color="0.4", ls=style, lw=1.5) for _, style in entries.values()]
        labels = [name for name, _ in entries.values()]
    if panel == RATIO_PANEL and keys:
        handles.append(ax.axhline(1e-3, color="0.5", ls=":", lw=1))
        labels.append("1e-3 (rule of thumb)")
    if not keys:
        ax.text(0.5, 0.5, "no slots", ha="center", va="center", transform=ax.transAxes, color="0.4")
    elif scale == "log" and any(np.any(_positive_or_nan(c[k], "log") > 0) for c in runs.values() for k in keys
                                if k in c):
        ax.set_yscale("log")
    if handles and (several or "/" in keys[0]):
        ax.legend(handles, labels, fontsize="x-small", ncols=1 + len(handles) // 8)
    ax.set_title(panel)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)


def _columns(diagnostics, label: str) -> dict[str, np.ndarray]:
    rows = diagnostics.rows if isinstance(diagnostics, Diagnostics) else list(diagnostics)
    if not rows:
        raise ValueError(f"no recorded steps to plot{f' in {label!r}' if label else ''}: record some with "
                         "Diagnostics.step() or DiagnosticsCallback.")
    names = list(dict.fromkeys(name for row in rows for name in row))
    return {name: np.array([row.get(name, math.nan) for row in rows], dtype=np.float64) for name in names}


def _positive_or_nan(values: np.ndarray, scale: str) -> np.ndarray:
    return np.where(values > 0, values, np.nan) if scale == "log" else values

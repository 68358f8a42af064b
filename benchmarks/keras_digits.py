"""Train an MLP on scikit-learn's digits with tfopt and with Keras's own optimizers, side by side.

The data are scikit-learn's ``load_digits`` (1797 real 8x8 images, 10 classes;
shipped inside scikit-learn, nothing is downloaded), pixels scaled to [0, 1] and
split once into a stratified 75 % / 25 % train / test split with a fixed seed. The
model is a 64 -> 64 (relu) -> 10 MLP, trained with

* tfopt.GradientDescent  vs  keras.optimizers.SGD
* tfopt.Momentum(0.9)    vs  keras.optimizers.SGD(momentum=0.9)
* tfopt.Adam             vs  keras.optimizers.Adam

(the same learning rate within each pair), in two modes:

* ``loop``: a ``tf.function`` custom training step (tfopt's ``tf.Module`` optimizer
  directly; a Keras optimizer through its ``apply_gradients``);
* ``fit``: ``model.compile`` + ``model.fit`` (tfopt through ``opt.as_keras()``).

Every configuration starts from the same initial weights (``keras.utils.set_random_seed``
before building each model) and sees the same batches in the same order (one fixed
permutation of the training set per epoch). Configurations run round-robin, one
epoch at a time, each tfopt run back to back with its Keras counterpart (the order
alternating), so that a busy machine slows both alike. Seconds per epoch are the
median over epochs 2..E; epoch 1 also traces the training step and is reported on
its own (for the loop it includes tf.function tracing the step twice when an
optimizer creates its slots on the first call, and, for the first tfopt
configuration in the process, AutoGraph converting tfopt's Python code once).
The time ratio is the median of the per-epoch ratios tfopt / Keras, with its
interquartile range as a measure of timing noise, for wall-clock and for process
CPU seconds. Test accuracy and the loss on the whole training set are measured
after every epoch, outside the timing. The table's last column is the largest
difference between the final weights of tfopt and Keras.

    python benchmarks/keras_digits.py [--epochs 30] [--quick] [--out digits-report] [--threads N]

Prints the table, writes ``learning_curves.png``, ``table.txt`` and
``results.json`` to ``--out``. Target: tfopt's accuracy within one percentage point
of its Keras counterpart, at no more time per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

try:  # run from a checkout without installing
    import tfopt  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def _tfopt(name, **kwargs):
    def make(learning_rate):
        import tfopt

        return getattr(tfopt, name)(learning_rate, **kwargs)

    return make


def _keras(name, **kwargs):
    def make(learning_rate):
        import keras

        return getattr(keras.optimizers, name)(learning_rate, **kwargs)

    return make


PAIRS = [  # (label "tfopt / keras", learning rate, tfopt factory, keras factory)
    ("GradientDescent / SGD", 0.1, _tfopt("GradientDescent"), _keras("SGD")),
    ("Momentum(0.9) / SGD(momentum=0.9)", 0.01, _tfopt("Momentum", momentum=0.9), _keras("SGD", momentum=0.9)),
    ("Adam / Adam", 1e-3, _tfopt("Adam"), _keras("Adam")),
]
MODES = ("loop", "fit")
LIBRARIES = ("tfopt", "keras")


def load_data(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def build_model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])


class Stopwatch:
    """Per-epoch wall-clock and process CPU seconds (CPU time does not run while other processes hold the cores)."""

    def __init__(self):
        self.seconds, self.cpu_seconds = [], []

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.seconds.append(time.perf_counter() - self._wall)
        self.cpu_seconds.append(time.process_time() - self._cpu)


class Run:
    """One configuration: optimizer pair x library x mode, with its model and its per-epoch records."""

    def __init__(self, pair: int, library: str, mode: str, seed: int):
        import keras
        import tensorflow as tf

        self.pair, self.library, self.mode = pair, library, mode
        label, lr, make_tfopt, make_keras = PAIRS[pair]
        self.name = f"{label.split(' / ')[0 if library == 'tfopt' else 1]} ({library}, {mode})"
        self.model = build_model(seed)
        self.clock = Stopwatch()
        self.test_accuracy, self.train_loss = [], []
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if mode == "fit":
            optimizer = make_tfopt(lr).as_keras() if library == "tfopt" else make_keras(lr)
            self.model.compile(optimizer=optimizer, loss=loss_fn)
            clock = self.clock

            class EpochTimer(keras.callbacks.Callback):
                """Times fit's epoch loop only (not its per-call setup)."""

                def on_epoch_begin(self, epoch, logs=None):
                    clock.start()

                def on_epoch_end(self, epoch, logs=None):
                    clock.stop()

            self.callbacks = [EpochTimer()]
            return
        model, optimizer = self.model, (make_tfopt(lr) if library == "tfopt" else make_keras(lr))
        if library == "keras":
            optimizer.build(model.trainable_variables)  # Keras cannot create its slots inside tf.function

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32), tf.TensorSpec([None], tf.int32)])
        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        self.train_step = train_step

    def train_epoch(self, dataset) -> None:
        if self.mode == "fit":
            self.model.fit(dataset, epochs=1, shuffle=False, verbose=0, callbacks=self.callbacks)
            return
        self.clock.start()
        for x, y in dataset:
            loss = self.train_step(x, y)
        loss.numpy()  # wait for the last step
        self.clock.stop()


def warm_up(dataset) -> None:
    """Pay TensorFlow's one-off costs (first tf.function, first tf.data pipeline) outside every timing."""
    import keras
    import tensorflow as tf

    model, optimizer = build_model(0), keras.optimizers.SGD(0.0)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for x, y in dataset.take(2):
        step(x, y)


def make_evaluator(x_train, y_train, x_test, y_test):
    """``evaluate(run)``: record the loss on the whole training set and the test accuracy (eagerly)."""
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x_train, y_train, x_test, y_test = (tf.constant(a) for a in (x_train, y_train, x_test, y_test))

    def evaluate(run: Run) -> None:
        train_loss = loss_fn(y_train, run.model(x_train, training=False))
        predictions = tf.argmax(run.model(x_test, training=False), axis=1, output_type=tf.int32)
        run.train_loss.append(float(train_loss))
        run.test_accuracy.append(float(tf.reduce_mean(tf.cast(predictions == y_test, tf.float32))))

    return evaluate


def _ratio_stats(tfopt_times: list, keras_times: list) -> tuple[float, float, float]:
    """Median and quartiles of the per-epoch ratios tfopt / Keras over epochs 2.. (the two ran back to back)."""
    ratios = [a / b for a, b in zip(tfopt_times[1:], keras_times[1:])]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return statistics.median(ratios), q1, q3


def summarize(runs: dict) -> list[dict]:
    rows = []
    for pair, (label, lr, _, _) in enumerate(PAIRS):
        for mode in MODES:
            t, k = runs[pair, "tfopt", mode], runs[pair, "keras", mode]
            weights_diff = max(float(np.max(np.abs(a.numpy() - b.numpy())))
                               for a, b in zip(t.model.trainable_variables, k.model.trainable_variables))
            wall = _ratio_stats(t.clock.seconds, k.clock.seconds)
            cpu = _ratio_stats(t.clock.cpu_seconds, k.clock.cpu_seconds)
            rows.append(dict(
                optimizer=label, learning_rate=lr, mode=mode,
                tfopt_accuracy=t.test_accuracy[-1], keras_accuracy=k.test_accuracy[-1],
                accuracy_diff_pp=100 * (t.test_accuracy[-1] - k.test_accuracy[-1]),
                tfopt_seconds=statistics.median(t.clock.seconds[1:]),
                keras_seconds=statistics.median(k.clock.seconds[1:]),
                time_ratio=wall[0], time_ratio_q1=wall[1], time_ratio_q3=wall[2],
                cpu_ratio=cpu[0], cpu_ratio_q1=cpu[1], cpu_ratio_q3=cpu[2],
                tfopt_first_epoch=t.clock.seconds[0], keras_first_epoch=k.clock.seconds[0],
                max_weight_diff=weights_diff, epochs=len(t.clock.seconds),
            ))
    return rows


def format_table(rows: list[dict], epochs: int, steps: int) -> str:
    header = (f"{'optimizer (tfopt / keras)':33} {'lr':>5} {'mode':4} | {'test acc tfopt':>14} {'keras':>7} "
              f"{'diff pp':>7} | {'s/epoch tfopt':>13} {'keras':>7} {'ratio (IQR)':>17} | {'CPU ratio (IQR)':>17} | "
              f"{'epoch 1 tfopt':>13} {'keras':>6} | {'max|w_t-w_k|':>12}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['optimizer']:33} {r['learning_rate']:>5g} {r['mode']:4} | {r['tfopt_accuracy']:>14.2%} "
            f"{r['keras_accuracy']:>7.2%} {r['accuracy_diff_pp']:>+7.2f} | {r['tfopt_seconds']:>13.4f} "
            f"{r['keras_seconds']:>7.4f} {r['time_ratio']:>5.2f} ({r['time_ratio_q1']:.2f}-{r['time_ratio_q3']:.2f}) | "
            f"{r['cpu_ratio']:>5.2f} ({r['cpu_ratio_q1']:.2f}-{r['cpu_ratio_q3']:.2f}) | "
            f"{r['tfopt_first_epoch']:>13.3f} {r['keras_first_epoch']:>6.3f} | {r['max_weight_diff']:>12.2e}"
        )
    lines.append(
        f"{epochs} epochs x {steps} steps. test acc: after the last epoch. s/epoch: wall-clock median over epochs "
        f"2..{epochs}; epoch 1 (which traces the\ntraining step) is shown on its own. ratio: median over epochs 2.. of "
        "tfopt's epoch time / Keras's, the two run back to back; (IQR) its interquartile range,\ni.e. the timing "
        "noise. CPU ratio: the same with process CPU seconds, which a busy machine disturbs less."
    )
    return "\n".join(lines)


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    colors = ("tab:blue", "tab:orange", "tab:green")
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), sharex=True)
    for row, mode in enumerate(MODES):
        for (pair, library, run_mode), run in runs.items():
            if run_mode != mode:
                continue
            epochs = np.arange(1, len(run.test_accuracy) + 1)
            # tfopt: wide, pale, solid; Keras: thin, dashed, on top (identical curves stay visible)
            style = dict(color=colors[pair], label=run.name.replace(f", {mode}", ""),
                         **(dict(linestyle="-", linewidth=4, alpha=0.45, zorder=2) if library == "tfopt"
                            else dict(linestyle="--", linewidth=1.5, zorder=3)))
            axes[row, 0].plot(epochs, 100 * np.asarray(run.test_accuracy), **style)
            axes[row, 1].plot(epochs, run.train_loss, **style)
        axes[row, 0].set_ylabel("test accuracy (%)")
        axes[row, 0].set_title(f"{mode}: test accuracy after each epoch")
        axes[row, 1].set_ylabel("training loss (cross-entropy, whole training set)")
        axes[row, 1].set_yscale("log")
        axes[row, 1].set_title(f"{mode}: training loss after each epoch")
        for ax in axes[row]:
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    bottom = min(min(r.test_accuracy) for r in runs.values())
    for ax in axes[:, 0]:
        ax.set_ylim(max(0.0, 100 * bottom - 2), 100.5)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.suptitle("MLP 64-64-10 on scikit-learn digits: tfopt (wide solid) vs Keras (dashed), "
                 "same initial weights and batches")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="epochs per configuration (default 30; with --quick 4)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run: 4 epochs unless --epochs is given")
    parser.add_argument("--out", default="digits-report", help="folder for the PNG, table and JSON")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="split, initial weights and batch order")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads (default 0: TensorFlow's choice)")
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 4 if args.quick else 30
    if args.epochs < 3:
        parser.error("--epochs must be at least 3 (epoch 1 includes tracing; timings use epochs 2..)")

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    # The six custom-loop steps share one Python function, so TensorFlow would warn about "retracing"
    # although each is traced only in epoch 1 (checked below; a tfopt step that creates its slots on
    # the first call is traced twice, as tf.function does for every function that creates variables).
    tf.get_logger().setLevel("ERROR")
    x_train, x_test, y_train, y_test = load_data(args.seed)
    rng = np.random.default_rng(args.seed)
    orders = [rng.permutation(len(x_train)) for _ in range(args.epochs)]

    def epoch_dataset(epoch: int):
        order = orders[epoch]
        return tf.data.Dataset.from_tensor_slices((x_train[order], y_train[order])).batch(args.batch_size)

    runs = {(p, lib, mode): Run(p, lib, mode, args.seed) for p in range(len(PAIRS)) for mode in MODES
            for lib in LIBRARIES}
    first = next(iter(runs.values())).model.trainable_variables
    for run in runs.values():  # same initial weights everywhere
        assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first, run.model.trainable_variables))
    evaluate = make_evaluator(x_train, y_train, x_test, y_test)
    warm_up(epoch_dataset(0))
    steps = -(-len(x_train) // args.batch_size)
    print(f"digits: {len(x_train)} train / {len(x_test)} test, batch {args.batch_size} ({steps} steps/epoch), "
          f"{args.epochs} epochs, {len(runs)} configurations, TensorFlow threads: {args.threads or 'default'}",
          flush=True)

    for epoch in range(args.epochs):
        for pair in range(len(PAIRS)):
            for mode in MODES:
                libraries = LIBRARIES if (epoch + pair) % 2 == 0 else LIBRARIES[::-1]
                for library in libraries:
                    run = runs[pair, library, mode]
                    run.train_epoch(epoch_dataset(epoch))
                    evaluate(run)
        if epoch == 0 or (epoch + 1) % 10 == 0 or epoch + 1 == args.epochs:
            print(f"  epoch {epoch + 1}/{args.epochs} done", flush=True)
        if epoch == 0:
            traces = {key: run.train_step.experimental_get_tracing_count()
                      for key, run in runs.items() if run.mode == "loop"}
    for key, count in traces.items():  # no retracing after epoch 1
        assert runs[key].train_step.experimental_get_tracing_count() == count, f"{runs[key].name} retraced"
    rows = summarize(runs)
    table = format_table(rows, args.epochs, steps)
    print(table)
    verdicts = []
    for r in rows:
        accuracy = "OK" if abs(r["accuracy_diff_pp"]) <= 1.0 else "DIFFERS by more than 1 pp"
        ratios = f"wall {r['time_ratio']:.2f}, CPU {r['cpu_ratio']:.2f}"
        if r["epochs"] < 10:
            speed = f"not judged, fewer than 10 epochs (ratios {ratios})"
        else:
            verdict = []
            for kind in ("time", "cpu"):
                q1, q3 = r[f"{kind}_ratio_q1"], r[f"{kind}_ratio_q3"]
                verdict.append("faster" if q3 < 1 else "SLOWER" if q1 > 1 else "same within noise")
            speed = f"wall {verdict[0]} ({r['time_ratio']:.2f}), CPU {verdict[1]} ({r['cpu_ratio']:.2f})"
        verdicts.append(f"{r['optimizer']} ({r['mode']}): accuracy {accuracy} ({r['accuracy_diff_pp']:+.2f} pp); "
                        f"time per epoch {speed}")
    print("\n".join(verdicts))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(runs, out / "learning_curves.png")
    (out / "table.txt").write_text(table + "\n" + "\n".join(verdicts) + "\n")
    curves = {run.name: dict(seconds=run.clock.seconds, cpu_seconds=run.clock.cpu_seconds,
                             test_accuracy=run.test_accuracy, train_loss=run.train_loss)
              for run in runs.values()}
    (out / "results.json").write_text(json.dumps(dict(
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, steps_per_epoch=steps, threads=args.threads,
        tensorflow=tf.__version__, keras=__import__("keras").__version__, rows=rows, curves=curves), indent=1))
    print(f"wrote {out / 'learning_curves.png'}, {out / 'table.txt'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train with a tfopt optimizer under ``tf.distribute.MultiWorkerMirroredStrategy``.

Every worker process runs this same script. It reads ``TF_CONFIG``, creates the
strategy, builds a small Keras MLP and a tfopt optimizer inside
``strategy.scope()``, and trains a few steps in a custom loop with
``strategy.run``. The data are a fixed, seeded global data set cut into fixed
*global* batches; each worker takes its own contiguous slice of every global
batch, so the global batches are the same whatever the number of workers. The
loss is summed over examples and divided by the *global* batch size, and tfopt's
``apply_gradients`` sums the gradients across replicas: every step is exactly the
step a single process takes on the whole global batch (up to the order in which
floating-point sums are added). At the end each worker writes its weights to the
``.npz`` file given by ``--out``.

One process, no distribution (for comparison; also what happens without TF_CONFIG)::

    python examples/multi_worker.py --single --out single.npz

Two workers on this machine, by hand (two shells, loopback ports)::

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
                "task": {"type": "worker", "index": 0}}' python examples/multi_worker.py --out w0.npz
    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]},
                "task": {"type": "worker", "index": 1}}' python examples/multi_worker.py --out w1.npz

or let the launcher pick free loopback ports, start N workers and the
single-process run, and compare the weights::

    python examples/multi_worker.py --launch 2 --out-dir mw-run

Several machines (tfopt installed on each, e.g. ``pip install -e .`` in a checkout):
run the same command on every machine, each with the same ``cluster`` list of all
workers' ``host:port`` (reachable from every other machine; the port must be free on
its host) and its own ``task.index`` (0 is the chief)::

    # on host-a
    export TF_CONFIG='{"cluster": {"worker": ["host-a:2222", "host-b:2222"]},
                       "task": {"type": "worker", "index": 0}}'
    python examples/multi_worker.py --out /tmp/weights.npz
    # on host-b: the same, with "index": 1

Start the workers in any order: each waits for the others before its first step
(here, one started a minute after the other is fine). If one worker dies, the others
wait for it; stop them too. ``--global-batch`` must be divisible by the number of
replicas; with several devices per worker (GPUs), each worker's slice is split
further between its replicas (per-replica batch ``global_batch / num_replicas_in_sync``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

try:  # run from a checkout without installing: make ``import tfopt`` find the repository
    import tfopt  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NUM_FEATURES, NUM_CLASSES, HIDDEN = 16, 4, 32
OPTIMIZERS = ("adam", "momentum", "gd")


# --------------------------------------------------------------------- data
def make_data(num_examples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed data set: Gaussian inputs, labels from a fixed random linear map."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, NUM_FEATURES)).astype(np.float32)
    w = rng.normal(size=(NUM_FEATURES, NUM_CLASSES))
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(num_examples, NUM_CLASSES)), axis=1).astype(np.int32)
    return x, y


def worker_slice(global_batch: int, part: int, num_parts: int) -> slice:
    """The rows of every global batch that part ``part`` of ``num_parts`` (a worker, a replica) trains on."""
    if global_batch % num_parts:
        raise ValueError(f"--global-batch {global_batch} is not divisible into {num_parts} equal parts "
                         "(one per worker, and per replica).")
    size = global_batch // num_parts
    return slice(part * size, (part + 1) * size)


def global_batches(x, y, global_batch: int, steps: int):
    """The ``steps`` global batches, in order, cycling through the data set."""
    batches_per_epoch = len(x) // global_batch
    for step in range(steps):
        start = (step % batches_per_epoch) * global_batch
        yield x[start : start + global_batch], y[start : start + global_batch]


# -------------------------------------------------------------------- model
def make_model(seed: int):
    import keras

    keras.utils.set_random_seed(seed)  # the same initial weights in every process
    return keras.Sequential([
        keras.Input((NUM_FEATURES,)),
        keras.layers.Dense(HIDDEN, activation="relu"),
        keras.layers.Dense(NUM_CLASSES),
    ])


def make_optimizer(name: str, learning_rate: float):
    import tfopt

    if name == "adam":
        return tfopt.Adam(learning_rate)
    if name == "momentum":
        return tfopt.Momentum(learning_rate, momentum=0.9)
    return tfopt.GradientDescent(learning_rate)


def per_example_loss(model, x, y):
    import keras

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    return loss_fn(y, model(x, training=True))


def weights(model) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in model.weights]


def save_weights(path: str, model, optimizer, losses, initial) -> None:
    """Final weights ``w0, w1, ...`` (model order), initial weights ``init0, ...``, the step count, the losses."""
    arrays = {f"w{i}": w for i, w in enumerate(weights(model))}
    arrays.update({f"init{i}": w for i, w in enumerate(initial)})
    np.savez(path, iterations=int(optimizer.iterations.numpy()), losses=np.asarray(losses, np.float64), **arrays)


# ----------------------------------------------------------------- training
def train_single(args) -> None:
    """One process, no strategy: the reference run on the same global batches."""
    import tensorflow as tf

    x, y = make_data(args.examples, args.data_seed)
    model = make_model(args.seed)
    optimizer = make_optimizer(args.optimizer, args.learning_rate)
    initial = weights(model)

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(per_example_loss(model, xb, yb)) / args.global_batch
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses = [float(train_step(xb, yb)) for xb, yb in global_batches(x, y, args.global_batch, args.steps)]
    save_weights(args.out, model, optimizer, losses, initial)
    print(f"single: {args.steps} steps, final loss {losses[-1]:.6f} -> {args.out}", flush=True)


def train_multi_worker(args) -> None:
    """One worker of a MultiWorkerMirroredStrategy cluster described by TF_CONFIG."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG; waits for the other workers
    resolver = strategy.cluster_resolver
    worker, num_workers = resolver.task_id, resolver.cluster_spec().num_tasks("worker")
    if strategy.num_replicas_in_sync % num_workers:
        raise RuntimeError("every worker must have the same number of replicas")
    x, y = make_data(args.examples, args.data_seed)
    steps, global_batch = args.steps, args.global_batch
    worker_slice(global_batch, 0, strategy.num_replicas_in_sync)  # check divisibility early

    def dataset_fn(context: tf.distribute.InputContext):
        # Explicit sharding: input pipeline p (one per worker) takes rows
        # [p * b, (p + 1) * b) of every global batch, b = global_batch / pipelines.
        # No auto-sharding, no shuffling: the global batches are fixed.
        rows = worker_slice(global_batch, context.input_pipeline_id, context.num_input_pipelines)
        xs = np.stack([xb[rows] for xb, _ in global_batches(x, y, global_batch, steps)])
        ys = np.stack([yb[rows] for _, yb in global_batches(x, y, global_batch, steps)])
        dataset = tf.data.Dataset.from_tensor_slices((xs, ys))  # element = this worker's part of a batch
        # Several replicas on one worker (e.g. GPUs): split the worker's part between them.
        per_replica = context.get_per_replica_batch_size(global_batch)
        return dataset.unbatch().batch(per_replica, drop_remainder=True)

    dist_dataset = strategy.distribute_datasets_from_function(dataset_fn)

    with strategy.scope():
        model = make_model(args.seed)
        optimizer = make_optimizer(args.optimizer, args.learning_rate)
    initial = weights(model)

    @tf.function
    def train_step(iterator):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(per_example_loss(model, xb, yb)) / global_batch  # global batch size
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))  # sums grads across replicas
            return loss

        per_replica_loss = strategy.run(replica_step, args=next(iterator))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_loss, axis=None)

    iterator = iter(dist_dataset)
    losses = [float(train_step(iterator)) for _ in range(steps)]
    save_weights(args.out, model, optimizer, losses, initial)
    print(f"worker {worker}/{num_workers}: {steps} steps, final loss {losses[-1]:.6f} -> {args.out}", flush=True)


# ----------------------------------------------------------------- launcher
def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound to port 0, then released)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })


def training_args(args) -> list[str]:
    return ["--steps", str(args.steps), "--global-batch", str(args.global_batch), "--examples", str(args.examples),
            "--optimizer", args.optimizer, "--learning-rate", repr(args.learning_rate), "--seed", str(args.seed),
            "--data-seed", str(args.data_seed)]


def launch(args) -> int:
    """Start ``--launch`` workers on loopback ports and a single-process run; compare their weights."""
    os.makedirs(args.out_dir, exist_ok=True)
    ports = free_ports(args.launch)
    script = os.path.abspath(__file__)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = {}
    for i in range(args.launch):
        out = os.path.join(args.out_dir, f"worker{i}.npz")
        procs[out] = subprocess.Popen([sys.executable, script, "--out", out, *training_args(args)],
                                      env={**env, "TF_CONFIG": tf_config(ports, i)})
    single_out = os.path.join(args.out_dir, "single.npz")
    procs[single_out] = subprocess.Popen([sys.executable, script, "--single", "--out", single_out,
                                          *training_args(args)], env={k: v for k, v in env.items() if k != "TF_CONFIG"})
    deadline = time.monotonic() + args.timeout
    failed = False
    for out, proc in procs.items():
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = "timeout"
        if code != 0:
            print(f"{out}: process failed ({code})", file=sys.stderr)
            failed = True
    if failed:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return 1
    results = {out: np.load(out) for out in procs}
    single = results.pop(single_out)
    keys = sorted(k for k in single.files if k.startswith("w"))
    first = next(iter(results.values()))
    same = all(np.array_equal(r[k], first[k]) for r in results.values() for k in keys)
    print(f"workers end with {'identical' if same else 'DIFFERENT'} weights")
    for out, result in results.items():
        worst = max(float(np.max(np.abs(result[k] - single[k]))) for k in keys)
        print(f"{out}: largest difference to the single-process run {worst:.2e}")
    return 0 if same else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="where to write the final weights (.npz)")
    parser.add_argument("--single", action="store_true", help="train in one process, no distribution")
    parser.add_argument("--launch", type=int, metavar="N", help="start N workers on loopback ports and compare")
    parser.add_argument("--out-dir", default="multi-worker-run", help="with --launch: where the .npz files go")
    parser.add_argument("--timeout", type=float, default=300.0, help="with --launch: seconds before giving up")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=1, help="model initialisation seed")
    parser.add_argument("--data-seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.global_batch > args.examples:
        parser.error("--global-batch must not exceed --examples")
    if args.launch:
        return launch(args)
    if not args.out:
        parser.error("--out is required (or use --launch N)")
    if args.single or not os.environ.get("TF_CONFIG"):
        train_single(args)
    else:
        train_multi_worker(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

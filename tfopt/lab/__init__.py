"""The convergence lab.

* ``problems``, ``harness`` (``convergence_test``), ``results``: test losses and the compiled, batched loop;
* ``bench``: ``tfopt bench``'s suites and report; ``plotting``, ``animation``: paths, loss curves, basins, GIFs;
* ``sensitivity``: iterations to tolerance over a fine grid of learning rates;
* ``workloads``, ``train``, ``parallel``: the training suite, its scoring and where its trials run (processes, Ray);
* ``diagnostics``: per-step learning rate, update norms and slot statistics, as rows and TensorBoard scalars.
"""

"""Speed measurement as a library: ``effdet benchmark`` is its command-line front.

* :mod:`effdet.benchmarking.settings`: what one run measures (:class:`~effdet.benchmarking.settings.BenchmarkSettings`,
  the task names), without PyTorch, so the command line builds its flags from it;
* :mod:`effdet.benchmarking.measure`: timed runs in alternating rounds, peak memory, the figures of a task;
* :mod:`effdet.benchmarking.inputs`: synthetic JPEGs, training batches and network inputs;
* :mod:`effdet.benchmarking.tasks`: the timed units of work (a forward, an end-to-end prediction, a training step);
* :mod:`effdet.benchmarking.compare`: ratios between variants and the loss and output comparisons;
* :mod:`effdet.benchmarking.suite`: the whole run (:func:`~effdet.benchmarking.suite.run_benchmark`), optionally
  beside the reference port through a :class:`~effdet.benchmarking.suite.Reference` (the source checkout's
  ``refport/bench.py``).

The timing loop itself is :func:`effdet.inference.timing.time_calls`, the one the predictor uses too.
This package file imports none of its modules.
"""

"""Side-by-side benchmarks of mlflowkit against its peers.

Run ``python -m benchmarks`` (``--quick`` for a short smoke run, ``--help`` for the options).
Every workload runs for mlflowkit and for each installed peer (Dask, Hamilton, Prefect, redun,
joblib), round-robin over the tools in every repetition, and one table of medians, ranges and
ratios is printed. See ``docs/benchmarks.md``.

Layout
------
``core``
    The data model: run configuration, groups of comparable cases, rows of results.
``engine``
    Runs the groups: one worker process per tool family, warm-up, round-robin repetitions,
    time budgets and time-outs.
``workloads``
    The workloads A to G, one module each, plus the peers' adapters next to them.
``targets``
    The performance targets, in one table.
``report``
    The text table, the JSON lines and the generated section of ``docs/benchmarks.md``.
``machine``
    What the results page says about the machine (CPU, cores, memory, OS, Python, packages).
``child``
    Entry point of the fresh processes some workloads measure in.
"""

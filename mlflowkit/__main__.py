"""``python -m mlflowkit``: the ``mlflowkit`` command line (see :mod:`mlflowkit.cli`).

Useful where the console script is not on ``PATH``, e.g. ``.venv/bin/python -m mlflowkit``.
"""

from mlflowkit.cli import main

if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess
    main(prog_name="mlflowkit")

"""Entry point of the fresh processes that workloads C and D measure in.

``python -m benchmarks.child MODULE:FUNCTION JSON_KWARGS`` calls the function with the keyword
arguments and prints its result (a dict of numbers) as JSON on the last line of stdout, after
``RESULT``. A tool that cannot do the workload prints ``N/A reason`` and exits with status 3;
any other exception prints its traceback to stderr, ``ERROR type: message`` on stdout, and
exits with status 1.
"""

from __future__ import annotations

import json
import sys
import traceback

from benchmarks.core import NotApplicable, resolve, short_error

RESULT = "RESULT "
NA = "N/A "
ERROR = "ERROR "
NA_STATUS = 3


def main(argv: list[str]) -> int:
    """Run ``argv[0]`` with the JSON keyword arguments in ``argv[1]``."""
    target, kwargs = argv[0], json.loads(argv[1])
    try:
        result = resolve(target)(**kwargs)
    except NotApplicable as exc:
        print(NA + str(exc), flush=True)
        return NA_STATUS
    except Exception as exc:
        traceback.print_exc()
        print(ERROR + short_error(exc), flush=True)
        return 1
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

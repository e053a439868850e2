"""Entry point of a measured process: ``python -m benchmarks.child module:function '{"kwarg": ...}'``.

Prints one line ``BENCHMARK-RESULT {json}``: the function's returned dict plus ``peak_rss_mb``.
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings

from benchmarks.measure import RESULT_PREFIX, peak_rss_mb


def main(argv: list[str]) -> None:
    target, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    module_name, function_name = target.split(":")
    warnings.simplefilter("ignore")
    module = importlib.import_module(f"benchmarks.{module_name}")
    result = dict(getattr(module, function_name)(**kwargs))
    result["peak_rss_mb"] = peak_rss_mb()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

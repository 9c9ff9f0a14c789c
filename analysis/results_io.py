"""Where the analysis scripts put their results: one JSON line on stdout and in analysis/results/NAME.json."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def results_dir() -> Path:
    """analysis/results, created if missing (plots go beside the JSON)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS


def emit(result: dict, name: str) -> None:
    """Print `result` as ONE JSON line and write the same line to analysis/results/{name}.json."""
    line = json.dumps(result)
    print(line)
    (results_dir() / f"{name}.json").write_text(line + "\n")

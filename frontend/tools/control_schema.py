"""Writes the control file's schema for the Retune tab: ``frontend/src/control_schema.json``.

The tab checks what a person types with the same rules as the trainer
(``tb_retune.experiment.control``): this script turns those rules into JSON
that the bundle imports, so there is no hand copy to drift. ``npm run build``
runs it; ``tests/test_control_schema_json.py`` fails while the committed file
disagrees with ``control.py``.

    python frontend/tools/control_schema.py            writes the file
    python frontend/tools/control_schema.py --check    exits 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "src", "control_schema.json")


def _bound(value: float) -> float | None:
    return None if math.isinf(value) else value


def schema() -> dict[str, Any]:
    """The rules of ``control.py`` that the tab applies before sending anything."""
    from tb_retune.experiment import control, values

    ranges = {
        name: {
            "min": _bound(lo),
            "min_inclusive": lo_inc,
            "max": _bound(hi),
            "max_inclusive": hi_inc,
            "nullable": nullable,
        }
        for name, (lo, lo_inc, hi, hi_inc, nullable) in sorted(values.RANGES.items())
    }
    return {
        "generated_from": "tb_retune/experiment/control.py by frontend/tools/control_schema.py",
        "top_level_keys": list(control.TOP_LEVEL_KEYS),
        "restore_keys": list(control.RESTORE_KEYS),
        "short_names": dict(sorted(control.SHORT_NAMES.items())),
        "fixed_at_build": sorted(control.FIXED_AT_BUILD),
        "booleans": sorted(values.BOOL_HYPERPARAMETERS),
        "clip_keys": list(control.CLIP_KEYS),
        "ranges": ranges,
        "max_note_chars": control.MAX_NOTE_CHARS,
    }


def render() -> str:
    return json.dumps(schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        try:
            with open(OUT, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = ""
        if current != text:
            print(f"{os.path.relpath(OUT)} is stale: run `cd frontend && npm run build`", file=sys.stderr)
            return 1
        return 0
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(OUT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(HERE, "..", ".."))
    sys.exit(main())

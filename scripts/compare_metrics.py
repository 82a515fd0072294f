"""Compare two runs' ``metrics.json`` files number by number (the behaviour check of a refactor).

    python scripts/compare_metrics.py BEFORE/build/outputs AFTER/build/outputs [--digits 3]

Reads every ``*/metrics.json`` under both folders, rounds each number to ``--digits`` decimals (the
printed precision), and lists every leaf that differs, is missing on one side, or is new. Exit code 0
when they agree, 1 otherwise. Keys whose path contains one of ``--ignore`` (default: timings and
paths) are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

IGNORE = ("seconds", "wall", "time", "path", "folder", "commit", "version", "date")


def leaves(value, prefix=""):
    """``{path: value}`` of every number, string, bool or None in a JSON value."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(leaves(v, f"{prefix}/{k}"))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(leaves(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def same(a, b, digits: int) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or \
            not isinstance(b, (int, float)):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return round(a, digits) == round(b, digits)


def compare(before: Path, after: Path, digits: int = 3, ignore=IGNORE) -> list[str]:
    """Every difference between the two folders' ``metrics.json`` files, as lines."""
    lines = []
    names = sorted({p.parent.name for p in before.glob("*/metrics.json")} |
                   {p.parent.name for p in after.glob("*/metrics.json")})
    for name in names:
        a, b = before / name / "metrics.json", after / name / "metrics.json"
        if not a.exists() or not b.exists():
            lines.append(f"{name}: metrics.json only {'after' if b.exists() else 'before'}")
            continue
        la, lb = leaves(json.loads(a.read_text())), leaves(json.loads(b.read_text()))
        for key in sorted(set(la) | set(lb)):
            if any(word in key.lower() for word in ignore):
                continue
            if key not in la or key not in lb:
                lines.append(f"{name}{key}: only {'after' if key in lb else 'before'}")
            elif not same(la[key], lb[key], digits):
                lines.append(f"{name}{key}: {la[key]!r} -> {lb[key]!r}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--digits", type=int, default=3)
    args = parser.parse_args(argv)
    lines = compare(args.before, args.after, args.digits)
    print("\n".join(lines) if lines else f"every metrics.json agrees to {args.digits} decimals")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())

"""Time the six notebooks under a profile against its budget.

    python benchmarks/bench_notebooks.py --profile book      # the published run (budget 600 s)
    python benchmarks/bench_notebooks.py --quick             # notebook 01 only, tiny profile

Runs in a fresh temporary cache, so nothing is reused from earlier runs.
Last line: ``profile=... total_s=... budget_s=... total_vs_budget=...`` plus seconds per notebook.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import habitat_helpers as hh

BUDGET_S = {"tiny": 180.0, "book": 600.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny", choices=sorted(BUDGET_S))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="first notebook only, tiny profile")
    args = parser.parse_args()
    profile = "tiny" if args.quick else args.profile
    notebooks = hh.notebooks.notebook_paths()[:1] if args.quick else None
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HABITAT_HELPERS_CACHE"] = os.path.join(tmp, "cache")
        timings = hh.notebooks.run_all(profile, args.seed, os.path.join(tmp, "out"), notebooks=notebooks,
                                       progress=False)
    budget = BUDGET_S[profile] * (0.2 if args.quick else 1.0)
    parts = " ".join(f"{k[:2]}_s={v}" for k, v in timings.items() if k != "total")
    print(f"profile={profile} total_s={timings['total']} budget_s={budget:.0f} "
          f"total_vs_budget={timings['total'] / budget:.2f} {parts}")


if __name__ == "__main__":
    main()

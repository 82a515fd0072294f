"""Write book/api.md: one section per layer of scripts/check_layers.py (lowest first), one
``automodule`` per module, so the API page lists every module in the order the package is built.

    python scripts/api_page.py          # rewrites book/api.md
    python scripts/api_page.py --check  # exits 1 when book/api.md is not what it would write
"""

from __future__ import annotations

import sys
from pathlib import Path

from check_layers import LAYERS

ROOT = Path(__file__).resolve().parents[1]
TITLES = {"foundations": "Foundations", "data": "Data", "models": "Models", "evaluation": "Evaluation",
          "products": "Products", "commands": "Commands"}
#: Packages whose page lists their modules rather than their members.
NO_MEMBERS = ("fetch",)

HEAD = """# API reference

Generated from the docstrings of `habitat_helpers` when the book is built, so it always matches the
code. Import the package as `import habitat_helpers as hh` and reach each module by its name
(`hh.datasets`, `hh.align` …); importing it downloads nothing and does not import torch. Terms such as
{term}`site`, {term}`modality` or {term}`spatial block` are defined in the {doc}`glossary`.

The modules stand in layers, lowest first; a module imports only its own layer or lower
({doc}`contributing` shows the diagram). This page is written by `scripts/api_page.py` from the same
table that `make lint` checks.

```{eval-rst}
.. automodule:: habitat_helpers
   :no-members:
```
"""


def page() -> str:
    parts = [HEAD]
    for layer, modules in LAYERS.items():
        parts.append(f"\n## {TITLES[layer]}\n")
        for name in modules:
            if name == "__main__":
                continue
            options = "\n   :no-members:" if name in NO_MEMBERS else ""
            parts.append(f"\n### `habitat_helpers.{name}`\n\n```{{eval-rst}}\n.. automodule:: "
                         f"habitat_helpers.{name}{options}\n```\n")
    return "".join(parts)


def main(argv: list[str]) -> int:
    target = ROOT / "book" / "api.md"
    text = page()
    if "--check" in argv:
        if target.read_text() != text:
            print(f"{target} is out of date: run python scripts/api_page.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

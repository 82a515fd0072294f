"""What a user can fix: the error every command reports without a traceback, and the parser of
comma-separated option values that names the wrong item.

Foundation layer: every layer may raise :class:`UsageError`; only the command line
(:mod:`habitat_helpers.cli`) catches it and exits with code 2.
"""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """Something in the command that the user can fix (exit code 2, no traceback). A problem in
    the table itself is a :class:`habitat_helpers.datasets.TableError`, reported the same way."""


def comma_list(kind, allowed=None):
    """An argparse type: ``"1,2,3"`` -> ``[1, 2, 3]``, checking each item (of type ``kind``,
    among ``allowed`` when given); repeats are dropped, the order kept."""
    def parse(text: str):
        items = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                item = kind(part)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{part!r} is not a {kind.__name__}") from None
            if allowed is not None and item not in allowed:
                raise argparse.ArgumentTypeError(f"{part!r} is not one of {', '.join(map(str, allowed))}")
            items.append(item)
        if not items:
            raise argparse.ArgumentTypeError("give at least one value")
        return list(dict.fromkeys(items))     # drop repeats, keep the order
    return parse

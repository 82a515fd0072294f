"""The command line: ``python -m habitat_helpers <command> ...``.

=============  ===================================================================================
command        what it does
=============  ===================================================================================
``evaluate``   spatial block cross-validation (:func:`habitat_helpers.evaluation.cross_validate`)
               of any table of sites you have: it reads the table, embeds what the chosen
               modalities need, and writes the per-level metrics of the aligned model and of the
               baselines to ``results.json``
``qc``         location quality control of a table of sites (:mod:`habitat_helpers.qc`): every
               site scored out of fold for how well its photo, satellite patch and label fit its
               stated coordinates; writes ``flags.csv`` with p-values and a flag per site
``embed``      image embeddings of a site table into sharded, resumable cache files
               (:mod:`habitat_helpers.embed`); under ``torchrun`` the ranks share the shards
``align``      trains the contrastive projection heads on cached site embeddings
               (:mod:`habitat_helpers.align`); under ``torchrun`` the ranks share every batch
``fetch``      downloads real inputs for your sites: LUCAS survey tables and photos, Sentinel-2
               patches from a STAC API, WorldClim or CHELSA climate rasters
               (:mod:`habitat_helpers.fetch`), in the layouts the loaders read
``notebooks``  executes the book's notebooks with papermill, with one profile, seed and data
               (:mod:`habitat_helpers.notebooks`; ``make book``)
``report``     writes the results chapter's tables from the notebooks' ``metrics.json``
               (:mod:`habitat_helpers.report`)
``workshop``   student copies of the notebooks, exercises kept and solutions removed
               (:mod:`habitat_helpers.workshop`; ``make workshop``)
=============  ===================================================================================

``python -m habitat_helpers COMMAND --help`` shows a command's options. The multi-process
commands run under ``torchrun`` the same way, e.g.
``torchrun --nproc_per_node=4 -m habitat_helpers embed ...``.

Why ``evaluate`` is a command: to evaluate your own plots you should not need to write Python or to
reshape your table into the book's format first. ``evaluate`` accepts a plain CSV (or GeoParquet)
with a latitude, a longitude and a EUNIS code per row, whatever the columns are called, and says
row by row what it could not use instead of quietly dropping it (the reader is
:func:`habitat_helpers.datasets.read_table`, also usable from Python).

Adding a command: in the module it belongs to, write ``add_arguments(parser)`` (its options) and
``run(args) -> int`` (the work; returns the exit code, raises :class:`~habitat_helpers.errors.UsageError` for what the
user can fix), and add one line to :data:`COMMANDS`; ``python -m habitat_helpers --help`` picks
it up. The module is imported only when its command runs. The commands that read a table of sites
live in this package (:mod:`habitat_helpers.cli.evaluate`, :mod:`habitat_helpers.cli.qc`, their
shared table options in :mod:`habitat_helpers.cli.options`), since nothing below the command line
may import it.

Labels that stop at level 1 or 2 are evaluated at the levels they have: the summary and
``results.json`` say which levels no site is labelled at and which models could not be fitted in
which folds, and why (:meth:`habitat_helpers.evaluation.CVResult.failures`). The fold-level
scores are written first (``<out stem>_folds.csv``, and ``<out stem>_failures.csv`` when a fit
failed), so a failure while building the report loses nothing.

Exit codes: 0 when the command worked; 2 for a problem with what was asked (a column that is not
in the table, no labelled sites, fewer spatial blocks than folds, no model fitted in any fold ...),
with a message saying what to change. Anything else is a bug: it raises with a full traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable
from typing import NamedTuple

from ..datasets import TableError
from ..errors import UsageError

__all__ = ["COMMANDS", "Command", "UsageError", "build_parser", "main"]


class Command(NamedTuple):
    """A subcommand: its one-line help, and the module (``habitat_helpers.<module>``) with its two
    functions, ``add_arguments(parser)`` and ``run(args) -> int``, by name, so that the module is
    imported only when the command is used (``--help`` alone imports none, so no torch)."""

    help: str
    module: str
    add_arguments: str = "add_arguments"
    run: str = "run"

    def functions(self):
        """``(add_arguments, run)``, importing the module now."""
        module = importlib.import_module(f"{__package__.split('.')[0]}.{self.module}")
        return getattr(module, self.add_arguments), getattr(module, self.run)


#: Every subcommand, in the order ``python -m habitat_helpers --help`` lists them.
COMMANDS: dict[str, Command] = {
    "evaluate": Command("spatial block cross-validation of your own table of sites -> results.json",
                        "cli.evaluate"),
    "qc": Command("flag sites whose photo, satellite patch or label do not fit their coordinates -> flags.csv",
                  "cli.qc"),
    "map": Command("predict a kept model (evaluate --save-model) over a region, tile by tile on dask -> GeoTIFFs",
                   "cli.map"),
    "embed": Command("extract image embeddings of a site table into sharded files (torchrun-aware)", "embed"),
    "align": Command("train the contrastive projection heads on cached embeddings (torchrun-aware)", "align"),
    "notebooks": Command("execute the book's notebooks with papermill, in order, with one profile and seed",
                         "notebooks"),
    "fetch": Command("download real inputs for your sites: LUCAS photos, Sentinel-2 patches, climate rasters",
                     "fetch"),
    "report": Command("write the results chapter's tables from the notebooks' metrics", "report"),
    "workshop": Command("student copies of the notebooks: the exercises kept, their solutions removed",
                        "workshop"),
}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMANDS`. With ``commands``, only those get their
    options (and have their modules imported); the others are still listed by ``--help``."""
    wanted = set(COMMANDS if commands is None else commands)
    parser = argparse.ArgumentParser(
        prog="python -m habitat_helpers",
        description="Command line of habitat_helpers (habitats from photos, satellites and GPS).")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                       title="commands", help="run 'python -m habitat_helpers COMMAND --help'")
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help,
                                    description=command.help[:1].upper() + command.help[1:],
                                    prog=f"python -m habitat_helpers {name}")
        if name in wanted:
            add_arguments, run = command.functions()
            add_arguments(sub)
            sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 fine, 2 a usage problem, explained on stderr).

    Tests and notebooks can call ``main(["evaluate", "--sites", ...])`` in the same process."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # the command is the first word that is not an option (the top level has no option values)
    named = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser([named] if named in COMMANDS else [])
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:           # --help (0) or a bad option (2); argparse has printed why
        return stop.code if isinstance(stop.code, int) else 0
    try:
        return args.run(args)
    except (UsageError, TableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

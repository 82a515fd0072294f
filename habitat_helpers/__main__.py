"""``python -m habitat_helpers <command> ...``: the project's command line.

This file only hands over to :func:`habitat_helpers.cli.main`, which knows the commands
(``python -m habitat_helpers --help`` lists them). Keeping the logic in the ``cli`` package means it can
be imported and tested like any other module, without starting a new Python process.
"""

from habitat_helpers.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

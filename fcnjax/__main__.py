"""Command line: ``python -m fcnjax`` (or the ``fcnjax`` console script); see :mod:`fcnjax.cli`."""

from fcnjax.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""Thin wrapper kept because docs/reliability.md's recorded runs name this file: the same as
`python -m deployments bench reliability` (same arguments; needs the package installed)."""

import sys

from deployments.bench.reliability import main

if __name__ == "__main__":
    sys.exit(main())

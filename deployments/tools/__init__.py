"""The subcommands of `python -m deployments` (also installed as `clip-serve`) beyond serving:
one module per command, each with `build_parser()` and `main(argv)`. Modules import only
argparse-level code at the top, so `python -m deployments --help` loads neither torch nor Ray.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "python -m deployments"
REPO = Path(__file__).resolve().parents[2]


def command_parser(command: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of `python -m deployments <command>`, its module docstring as description."""
    return argparse.ArgumentParser(prog=f"{PROG} {command}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def write_or_check(files: dict[str, str], root: Path, check: bool, regenerate: str) -> int:
    """Write generated `files` (path relative to `root` -> text), or with `check` compare them with
    what is committed: print a diff of each stale file and exit status 1 naming `regenerate`."""
    import difflib

    drifted = []
    for rel, text in files.items():
        path = root / rel
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if check:
            drifted.append(rel)
            diff = difflib.unified_diff(current.splitlines(True), text.splitlines(True), f"{rel} (committed)",
                                        f"{rel} (generated)", n=2)
            sys.stdout.writelines(list(diff)[:60])
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {rel}")
    if drifted:
        print(f"\n{len(drifted)} generated file(s) out of date: {', '.join(drifted)}\n"
              f"Run `{regenerate}` and commit the result.", file=sys.stderr)
        return 1
    if check:
        print(f"up to date: {', '.join(files)}")
    return 0

"""Every command README.md and docs/*.md show exists as written: each `python -m deployments`
(or `python3 -m ...`, `clip-serve`) subcommand, bench scenario and `--flag`, each
`clip-serve-client` subcommand and flag, and each `scripts/...` file. The parsers are built
in this process (no command runs, no Ray). The run log of docs/benchmarks.md is left out:
it records commands as they were run at the time."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_LOG = "\n## Run log\n"
COMMAND = re.compile(r"(?:\b(?:python3?\s+-m\s+deployments(?:\.cli)?|clip-serve-client|clip-serve)(?=\s|$)"
                     r"|(?:\bpython3?\s+|\bbash\s+)?(?<![\w/.-])scripts/[\w./-]+)")
STOP = re.compile(r"\s(?:#|&&|\|\|?|;|&|>)(?:\s|$)|`")
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.M | re.S)
# Where a command can start: a line's start, after && ; | -- $( or environment assignments.
COMMAND_POSITION = re.compile(r"(?:.*(?:&&|;|\||\s--|\$\())?\s*(?:\w+=\S*\s+)*")
INLINE = re.compile(r"`([^`\n]+)`")
PLACEHOLDER = re.compile(r"<[^>]+>|\.\.\.|\[.*")  # <scenario>, ..., [options]


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def doc_text(path: Path) -> str:
    text = path.read_text()
    return text.split(RUN_LOG)[0] if path.name == "benchmarks.md" else text


def commands(text: str) -> list[str]:
    """Commands in fenced code blocks (continuation lines joined) and in inline code."""
    found = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            found += [c for c in _commands_in(line.strip().removeprefix("$ "))]
    for span in INLINE.findall(FENCE.sub("", text)):
        found += _commands_in(span)
    return found


def _commands_in(line: str) -> list[str]:
    out = []
    for match in COMMAND.finditer(line):
        if not COMMAND_POSITION.fullmatch(line[: match.start()]):
            continue  # a word in another command: `kubectl -n clip-serve ...`
        rest = line[match.start():]
        stop = STOP.search(rest)
        out.append(" ".join(rest[: stop.start() if stop else len(rest)].split()))
    return out


def all_commands() -> list[tuple[str, str]]:
    return sorted({(p.relative_to(REPO).as_posix(), c) for p in doc_files() for c in commands(doc_text(p))})


def options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def check_flags(tokens: list[str], allowed: set[str], where: str) -> None:
    for token in tokens:
        if token.startswith("-") and token not in ("-", "--") and not re.fullmatch(r"-\d.*", token):
            flag = token.split("=", 1)[0]
            assert flag in allowed, f"{where}: no option {flag}; known: {sorted(allowed)}"


def check_deployments(tokens: list[str], where: str) -> None:
    from deployments.__main__ import build_parser, command_parser

    if not tokens or tokens[0] in ("-h", "--help"):
        return
    name = tokens[0]
    assert name in subparsers(build_parser()), f"{where}: no subcommand {name!r}"
    parser, args = command_parser(name), tokens[1:]
    if name == "bench" and args and not args[0].startswith("-") and not PLACEHOLDER.fullmatch(args[0]):
        from deployments.bench import SCENARIOS, scenario_parser

        assert args[0] in SCENARIOS, f"{where}: no bench scenario {args[0]!r}"
        parser, args = scenario_parser(args[0]), args[1:]
    check_flags(args, options(parser) | {"-h", "--help"}, where)


def check_client(tokens: list[str], where: str) -> None:
    from deployments.cli import build_parser

    parser = build_parser()
    subs = subparsers(parser)
    words = [t for t in tokens if not t.startswith("-")]
    if not words:
        return check_flags(tokens, options(parser), where)
    assert words[0] in subs, f"{where}: clip-serve-client has no subcommand {words[0]!r}"
    check_flags(tokens, options(parser) | options(subs[words[0]]), where)


def check(command: str, where: str) -> None:
    if "scripts/" in command.split()[0] or command.split()[0] in ("python", "python3", "bash") and \
            command.split()[1].startswith("scripts/"):
        script = next(t for t in command.split() if t.startswith("scripts/"))
        assert (REPO / script).is_file(), f"{where}: {script} does not exist"
        return
    tokens = shlex.split(command)
    if tokens[0] in ("python", "python3"):
        module, tokens = tokens[2], tokens[3:]
        if module == "deployments.cli":
            return check_client(tokens, where)
        return check_deployments(tokens, where)
    if tokens[0] == "clip-serve-client":
        return check_client(tokens[1:], where)
    assert tokens[0] == "clip-serve", where
    check_deployments(tokens[1:], where)


@pytest.mark.parametrize("doc, command", all_commands(), ids=lambda value: value[:80])
def test_documented_command_exists(doc, command):
    check(command, f"{doc}: `{command}`")


def test_the_docs_show_every_kind_of_command():
    """The extraction really finds commands (a regex that matched nothing would pass above)."""
    found = {c for _, c in all_commands()}
    assert "bash scripts/quickstart.sh" in found
    assert any(c.startswith("clip-serve-client classify") for c in found)
    assert any(c.startswith("python3 -m deployments bench served") for c in found)
    assert any(c.startswith("python3 -m deployments finetune") for c in found)
    assert any(c.startswith("python -m deployments embed") for c in found)  # inside `ray job submit ... --`


@pytest.mark.parametrize("command", [
    "python -m deployments serve --no-such-flag",
    "python -m deployments bench served --no-such-flag",
    "python -m deployments bench no-such-scenario",
    "python3 -m deployments no-such-command",
    "clip-serve-client classify x.png --no-such-flag",
    "clip-serve-client no-such-command",
    "bash scripts/no_such_script.sh",
])
def test_the_check_fails_a_dead_command(command):
    with pytest.raises(AssertionError):
        check(command, command)


LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors (lower case, punctuation dropped, spaces to -) and explicit ids."""
    text = FENCE.sub("", path.read_text())
    found = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}
    return found | set(re.findall(r'<a id="([^"]+)"', text))


@pytest.mark.parametrize("doc", [p.relative_to(REPO).as_posix() for p in doc_files()])
def test_relative_links_resolve(doc):
    source = REPO / doc
    for target in LINK.findall(source.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file, _, anchor = target.partition("#")
        path = (source.parent / file).resolve() if file else source
        assert path.exists(), f"{doc}: link to missing {target}"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{doc}: no heading #{anchor} in {path.name}"

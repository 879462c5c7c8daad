"""The README stays short, its commands parse with the real `qa-scale` parser, and its links resolve.

Commands are read from the README's fenced code blocks: `qa-scale ...`, `.venv/bin/qa-scale ...`
and `$(which qa-scale) ...` under `deepspeed`. Each is split like a shell would (shlex; a trailing
`\\` joins lines, `#` starts a comment, `&&`, `|`, `;` and redirections end a command) and handed
to `build_parser().parse_args`. Path arguments are `type=Path`, which checks nothing on disk at
parse time (`cli/common.py`), so example paths parse as they are; a misspelled flag, a missing
required flag or a bad choice fails, naming the README line.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_LINES = 250

LAUNCHERS = ("$(which qa-scale)", ".venv/bin/qa-scale")
ENDS = {"&&", "||", "|", ";", "&", ">", ">>", "<", "2>", "2>&1"}
FRESH_MACHINE = ("bash tools/setup_env.sh && .venv/bin/qa-scale demo --out demo",
                 "bash tools/setup_env.sh && .venv/bin/python -m pytest -q -n 2 --dist loadfile")


def fenced_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, logical line) of every fenced code block, `\\` continuations joined."""
    out, inside, pending, start = [], False, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def commands(text: str) -> list[tuple[int, str, list[str]]]:
    """(README line, the line, argv after `qa-scale`) for every qa-scale invocation in code blocks."""
    found = []
    for number, line in fenced_lines(text):
        for launcher in LAUNCHERS:
            line = line.replace(launcher, "qa-scale")
        if "qa-scale" not in line:
            continue
        tokens = shlex.split(line, comments=True)
        for i, token in enumerate(tokens):
            if token != "qa-scale":
                continue
            argv = []
            for arg in tokens[i + 1:]:
                if arg in ENDS:
                    break
                argv.append(arg)
            found.append((number, line.strip(), argv))
    return found


README_TEXT = README.read_text(encoding="utf-8")
COMMANDS = commands(README_TEXT)


def test_readme_is_short():
    lines = README_TEXT.count("\n") + (not README_TEXT.endswith("\n"))
    assert lines <= MAX_LINES, f"README.md has {lines} lines; keep it to {MAX_LINES} (move details to docs/)"


def test_readme_keeps_the_two_fresh_machine_commands():
    blocks = {line.strip() for _, line in fenced_lines(README_TEXT)}
    for cmd in FRESH_MACHINE:
        assert cmd in blocks, f"README.md lost the command {cmd!r}"


def test_the_readme_has_commands_to_check():
    """Guards the extraction itself: a README whose commands are no longer found would pass vacuously."""
    assert len(COMMANDS) >= 20, COMMANDS
    assert {"demo", "train", "predict", "ensemble", "submit", "evaluate", "answer", "serve", "compare"} <= {
        argv[0] for _, _, argv in COMMANDS if argv}


def strict_parser():
    """The real `qa-scale` parser, with abbreviated flags refused: the README spells every flag out."""
    import argparse

    from qa_scale.cli.app import build_parser

    parser = build_parser()
    todo = [parser]
    while todo:
        p = todo.pop()
        p.allow_abbrev = False
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return parser


@pytest.mark.parametrize("number,line,argv", COMMANDS, ids=[f"README.md:{n}" for n, _, _ in COMMANDS])
def test_readme_command_parses(number, line, argv):
    from qa_scale.cli.app import parse_arguments

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parse_arguments(strict_parser(), argv)  # as `qa-scale` parses (overrides may follow options)
    except SystemExit as exit_:
        assert exit_.code in (0, None), f"README.md:{number}: `{line}` does not parse:\n{err.getvalue()}"


SUBCOMMANDS = sorted({argv[0] for _, _, argv in COMMANDS if argv and not argv[0].startswith("-")})


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_readme_subcommand_help_runs(name):
    proc = subprocess.run([sys.executable, "-m", "qa_scale", name, "--help"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, f"qa-scale {name} --help exited {proc.returncode}:\n{proc.stderr}"
    assert f"usage: qa-scale {name}" in proc.stdout


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(path: Path) -> list[tuple[int, str]]:
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same file
            out.append((number, target))
    return out


@pytest.mark.parametrize("doc", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files(doc):
    links = relative_links(doc)
    missing = [f"{doc.relative_to(ROOT)}:{n}: {t}" for n, t in links
               if not (doc.parent / t.split("#")[0]).exists()]
    assert not missing, "links to files that do not exist:\n" + "\n".join(missing)


def test_readme_links_to_every_doc():
    linked = {(README.parent / t.split("#")[0]).resolve() for _, t in relative_links(README)}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"docs/ files the README does not link to: {unlinked}"


def test_layout_table_lists_every_module():
    """Every module under src/qa_scale/ is named in its sub-package's row of the README's Layout table."""
    layout = README_TEXT[README_TEXT.index("\n## Layout"):]
    rows = {}
    for line in layout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`[a-z_]+/`", cells[0]):
            rows[cells[0].strip("`/")] = cells[1]
    package = ROOT / "src" / "qa_scale"
    missing = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        parts = path.relative_to(package).parts
        where = layout if len(parts) == 1 else rows.get(parts[0], "")
        if f"`{path.stem}`" not in where:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, "modules missing from the README's Layout table:\n" + "\n".join(missing)

"""Every `pocketmesh` command in the code blocks of the README and of every docs/ page
parses: the subcommand and every flag exist, `--help` of each subcommand works, and the
config paths they name exist. Every relative link of those pages resolves, to a file and
to a heading of it. Documented commands and links rot silently otherwise."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from xds_server.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPERATORS = {"&&", "||", "|", ";", "&", "(", ")"}
REDIRECTS = {">", ">>", "<"}
SHELL_WORDS = {"do", "then", "else", "time", "!"}


def code_lines(page: Path) -> list[tuple[int, str]]:
    """Command lines of ```sh blocks (all but comments) and ```console blocks (`$ ...`)."""
    found: list[tuple[int, str]] = []
    block: str | None = None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        fence = re.match(r"\s*```(\w*)", line)
        if fence:
            block = None if block is not None else fence.group(1)
            continue
        if block == "sh" and line.strip() and not line.lstrip().startswith("#"):
            found.append((number, line.strip()))
        elif block == "console" and line.startswith("$ "):
            found.append((number, line[2:]))
    return found


def pocketmesh_commands(line: str) -> list[list[str]]:
    """Each `pocketmesh ...` invocation in a shell line, as argv (without `pocketmesh`)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token in OPERATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    commands = []
    for words in segments:
        while words and words[0] in SHELL_WORDS:
            words = words[1:]
        if not words or words[0] != "pocketmesh":
            continue
        argv: list[str] = []
        skip = False
        for word in words[1:]:
            if skip:
                skip = False
            elif word in REDIRECTS:
                skip = True
            else:
                argv.append(word)
        commands.append(argv)
    return commands


def inline_commands(page: Path) -> list[tuple[int, str]]:
    """`pocketmesh ...` in inline code (the README's tables name commands there)."""
    found = []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        found += [(number, span) for span in re.findall(r"`(pocketmesh [^`]+)`", line)]
    return found


def documented() -> list[tuple[str, list[str]]]:
    out = []
    for page in PAGES:
        lines = code_lines(page) + (inline_commands(page) if page.name == "README.md" else [])
        for number, line in lines:
            for argv in pocketmesh_commands(line):
                out.append((f"{page.relative_to(ROOT)}:{number}", argv))
    return out


def test_the_docs_have_commands_to_check() -> None:
    found = documented()
    assert len(found) >= 30, found
    subcommands = {argv[0] for _, argv in found if argv and not argv[0].startswith("-")}
    assert {"up", "serve", "bootstrap", "validate", "status", "config-dump", "ca", "bench"} <= (
        subcommands
    )


@pytest.mark.parametrize(("where", "argv"), documented(), ids=lambda v: str(v)[:60])
def test_documented_command_parses(where: str, argv: list[str]) -> None:
    parser = build_parser()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 0, f"{where}: pocketmesh {shlex.join(argv)}\n{err.getvalue()}"
        return
    for name in ("config", "paths"):
        values = getattr(args, name, None) or []
        for value in [values] if isinstance(values, str) else values:
            if str(value).startswith("config/"):
                assert (ROOT / value).exists(), f"{where}: {value} does not exist"


def test_help_of_every_documented_subcommand() -> None:
    seen: set[tuple[str, ...]] = set()
    for _, argv in documented():
        words = [w for w in argv if not w.startswith("-")][:2]
        if not words:
            continue
        command = tuple(words[:2]) if words[0] == "ca" and len(words) > 1 else (words[0],)
        seen.add(command)
    for command in sorted(seen):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0 and "usage: pocketmesh" in out.getvalue(), command


def test_the_readme_starts_with_its_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[2] == "```sh"
    assert lines[3].endswith("pocketmesh up      # run the demo mesh")
    assert lines[4].endswith("python -m pytest -q  # run the tests")
    for line in lines[3:5]:
        assert line.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install")


def anchors(page: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to '-'."""
    found = set()
    block = False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            block = not block
        elif not block and (heading := re.match(r"#+\s+(.*)", line)):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(slug.replace(" ", "-"))
    return found


def test_the_readme_links_every_docs_page() -> None:
    text = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[^)#]+)\)", text))
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= linked


def test_relative_links_resolve() -> None:
    broken = []
    for page in PAGES:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", link):
                continue  # https:, mailto:
            path, _, fragment = link.partition("#")
            target = (page.parent / path) if path else page
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link}: no such file")
            elif fragment and target.suffix == ".md" and fragment not in anchors(target):
                broken.append(f"{page.relative_to(ROOT)}: {link}: no such heading")
    assert broken == [], "\n".join(broken)

"""The docs stay honest: what the README and docs/ point at exists, and the commands they show run.

- every relative link (and its ``#anchor``, for Markdown targets) resolves;
- every repository path the text names (``mmsent/...``, ``scripts/...``, ``docs/...``, the root
  config files, ...) exists;
- every ``python scripts/...``, ``bash scripts/...``, ``python loadtest/...`` and
  ``python -m mmsent...`` command in a fenced block names a script that exists, and each
  ``--flag`` it shows appears in that script's ``--help`` (of the subcommand shown, if any; for
  shell scripts, in the script). ``--help`` outputs are cached on disk, keyed by the script and
  every ``mmsent`` module it imports, so an unchanged tree does not pay for them again;
- the README makes no claim about sizes (lines, MB); a size given for a repository file in
  docs/ (``weights/default_head.pt`` (5.2 MB)) matches the file;
- no tracker issue numbers ("issue 13", "#13"); upstream references (``owner/repo#N``) are fine;
- docs/openapi.yaml is a valid OpenAPI 3 description (tests/integration/test_openapi.py checks
  the server against it).
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), ROOT / "examples" / "README.md",
     ROOT / "model_store" / "README.md"]
)  # fmt: skip
HELP_CACHE = Path(os.environ.get("MMSENT_DOCS_CACHE", tempfile.gettempdir())) / "mmsent-docs-help"

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# a repository path: one of the tracked top-level folders, or a root file; not part of a URL or
# of an absolute path (nothing path-like right before it)
TRACKED = r"(?:mmsent|scripts|tests|handlers|docs|deploy|loadtest|examples|weights|\.ci)/"
PATH = re.compile(rf"(?<![\w/.~$-])({TRACKED}[\w./-]*[\w/])")
ROOT_FILE = re.compile(
    r"(?<![\w/.-])(config\.properties|config\.production\.properties|metrics\.yaml|"
    r"pyproject\.toml|requirements\.txt|requirements-assets\.txt)(?![\w.-])"
)
SIZE_CLAIM = re.compile(r"\b\d[\d,.]*\s*(?:lines|[KMG]i?B)\b")
FILE_SIZE = re.compile(rf"`?((?:{TRACKED})[\w./-]+)`?\s*\((\d+(?:\.\d+)?) MB")
ISSUE_WORD = re.compile(r"\bissues?[ -]?#?\d+\b", re.I)
HASH_NUMBER = re.compile(r"(?<![\w&])#\d+(?![\w-])")
UPSTREAM_REF = re.compile(r"[\w.-]+/[\w.-]+$")  # owner/repo right before "#N"
LAUNCHERS = {"python", "python3", ".venv/bin/python", "bash"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """The text without fenced blocks and inline code (for links and headings)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def fenced_blocks(text: str) -> list[str]:
    return [m.group(1) for m in FENCE.finditer(text)]


# -- links and anchors --------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower-case, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link: its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor GitHub gives ``path``'s headings (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def broken_links(doc: Path) -> list[str]:
    problems = []
    for target in LINK.findall(prose(doc.read_text())):
        if re.match(r"[a-z][\w+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            problems.append(f"{rel(doc)}: link to missing {target}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{rel(doc)}: link to missing anchor {target}")
    return problems


# -- paths --------------------------------------------------------------------------------------
def named_paths(text: str) -> set[str]:
    """Repository paths in ``text``: a folder ends with "/", a file has a suffix (so a unit
    such as "examples/s" is not a path)."""
    found = {m.rstrip(".") for m in PATH.findall(text)}
    found = {p for p in found if p.endswith("/") or "." in p.rsplit("/", 1)[-1]}
    return found | set(ROOT_FILE.findall(text))


# -- commands -----------------------------------------------------------------------------------
def logical_lines(block: str) -> list[str]:
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def tokens_of(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in a shown fragment: plain words will do
        return line.split("#", 1)[0].split()


def commands(block: str) -> list[list[str]]:
    """Each ``python scripts/..`` / ``bash scripts/..`` / ``python loadtest/..`` / ``python -m
    mmsent..`` command of a block, as tokens up to the next shell operator."""
    found = []
    for line in logical_lines(block):
        tokens = tokens_of(line)
        for i, token in enumerate(tokens[:-1]):
            if token not in LAUNCHERS:
                continue
            rest = tokens[i + 1 :]
            script = rest[0].startswith(("scripts/", "loadtest/"))
            module = rest[0] == "-m" and len(rest) > 1 and rest[1].startswith("mmsent.")
            if not (script or module):
                continue
            end = next((j for j, t in enumerate(rest) if re.fullmatch(r"[;&|()<>]+", t)),
                       len(rest))  # fmt: skip
            found.append([token, *rest[:end]])
    return found


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py", base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


@cache
def mmsent_imports(path: Path) -> frozenset[Path]:
    """``path`` and every mmsent module it imports, transitively (for the cache key)."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in ast.walk(ast.parse(current.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("mmsent") and (found := module_file(name)):
                    todo.append(found)
    return frozenset(seen)


def help_key(argv: tuple[str, ...], entry: Path) -> str:
    digest = hashlib.sha256(" ".join(argv).encode())
    for path in sorted(mmsent_imports(entry)):
        digest.update(rel(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def help_text(argv: tuple[str, ...], entry: Path) -> str:
    """``python <argv> --help``, from the disk cache when nothing it imports changed."""
    cached = HELP_CACHE / f"{help_key(argv, entry)}.txt"
    if cached.exists():
        return cached.read_text()
    done = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    text = done.stdout + done.stderr
    if done.returncode != 0:
        return f"HELP FAILED (exit {done.returncode}): {text[-2000:]}"
    HELP_CACHE.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    partial.write_text(text)
    partial.replace(cached)  # atomic: a concurrent reader sees all of it or nothing
    return text


def subcommands(help_output: str) -> set[str]:
    """The choices of a subcommand positional (``{start,stop}``) in a usage text."""
    found = re.search(r"^\s*\{([\w,-]+)\}", help_output, flags=re.M)
    return set(found.group(1).split(",")) if found else set()


def shown_flags(args: list[str]) -> list[str]:
    flags = []
    for arg in args:
        arg = arg.strip("[]")
        if re.match(r"--[A-Za-z]", arg):
            flags.append(arg.split("=", 1)[0])
    return flags


def entry_point(command: list[str]) -> tuple[Path | None, tuple[str, ...], list[str]]:
    """(the file that runs, the argv before the options, the options) of a shown command."""
    if command[1] == "-m":
        return module_file(command[2]), ("-m", command[2]), command[3:]
    script = ROOT / command[1]
    return (script if script.is_file() else None), (command[1],), command[2:]


def check_command(doc: Path, command: list[str]) -> list[str]:
    where = f"{rel(doc)}: `{' '.join(command)[:100]}`"
    entry, argv, args = entry_point(command)
    if entry is None:
        return [f"{where}: no script or module {' '.join(argv)}"]
    if command[0] == "bash":
        text = entry.read_text()
        return [f"{where}: {entry.name} has no {flag}" for flag in shown_flags(args)
                if not re.search(re.escape(flag) + r"(?![\w-])", text)]  # fmt: skip
    text = help_text(argv, entry)
    if text.startswith("HELP FAILED"):
        return [f"{where}: {text}"]
    sub = next((a for a in args if not a.startswith("-")), None)
    if sub in subcommands(text):
        text += help_text((*argv, sub), entry)
    return [f"{where}: {flag} is not in its --help" for flag in shown_flags(args)
            if not re.search(re.escape(flag) + r"(?![\w-])", text)]  # fmt: skip


# -- the tests ----------------------------------------------------------------------------------
def test_the_docs_are_found() -> None:
    names = {rel(d) for d in DOCS}
    assert {"README.md", "docs/calling.md", "docs/architecture.md"} <= names, names


def test_relative_links_resolve() -> None:
    problems = [p for doc in DOCS for p in broken_links(doc)]
    assert not problems, "\n".join(problems)


def test_named_repository_paths_exist() -> None:
    problems = [
        f"{rel(doc)}: names missing {path}"
        for doc in DOCS
        for path in sorted(named_paths(doc.read_text()))
        if not (ROOT / path).exists()
    ]
    assert not problems, "\n".join(problems)


def test_documented_commands_name_scripts_and_flags_that_exist() -> None:
    shown = [(doc, c) for doc in DOCS for b in fenced_blocks(doc.read_text()) for c in commands(b)]
    assert len(shown) > 30, shown  # the parser still finds the docs' commands
    helps = {entry_point(c)[:2] for _, c in shown if c[0] != "bash" and entry_point(c)[0]}
    with ThreadPoolExecutor(max_workers=2) as pool:  # warm the help cache, two at a time
        list(pool.map(lambda pair: help_text(pair[1], pair[0]), helps))
    problems = [p for doc, command in shown for p in check_command(doc, command)]
    assert not problems, "\n".join(problems)


def test_the_readme_makes_no_size_claims() -> None:
    claims = SIZE_CLAIM.findall(prose((ROOT / "README.md").read_text()))
    assert not claims, f"README states sizes that nothing checks: {claims}"


def test_file_sizes_stated_in_the_docs_are_right() -> None:
    problems = []
    for doc in DOCS:
        for path, megabytes in FILE_SIZE.findall(doc.read_text()):
            if (ROOT / path).is_file():
                actual = (ROOT / path).stat().st_size / 1e6
                decimals = len(megabytes.partition(".")[2])
                if round(actual, decimals) != float(megabytes):
                    problems.append(f"{rel(doc)}: {path} is {actual:.2f} MB, not {megabytes} MB")
    assert not problems, "\n".join(problems)


def test_no_tracker_issue_numbers() -> None:
    problems = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            hits = ISSUE_WORD.findall(line)
            hits += [m.group() for m in HASH_NUMBER.finditer(line)
                     if not UPSTREAM_REF.search(line[: m.start()])]  # fmt: skip
            problems += [f"{rel(doc)}:{number}: {hit}" for hit in hits]
    assert not problems, "\n".join(problems)


def test_openapi_description_is_valid() -> None:
    import yaml
    from openapi_spec_validator import validate

    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    assert spec["openapi"].startswith("3.")
    validate(spec)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("## REST: `/predictions`", "rest-predictions"),
        ("## 5. Scale", "5-scale"),
        ("## Verified here / not verified", "verified-here--not-verified"),
        ("### The label rule (`mmsent/data/labels.py: fuse_labels`)",
         "the-label-rule-mmsentdatalabelspy-fuse_labels"),
    ],
)  # fmt: skip
def test_slug_matches_github(text: str, expected: str) -> None:
    assert slug(text.lstrip("# ")) == expected


def test_the_command_parser_reads_flags_and_subcommands() -> None:
    block = ('python scripts/serve.py start --timeout 5  # comment --nope\n'
             'python loadtest/run_loadtest.py --host http://x \\\n    --users 4 | tee out\n'
             "bash scripts/gpu_check.sh all\n"
             "python -m mmsent.clients.health --inference-url u [--key-file k]\n")  # fmt: skip
    found = commands(block)
    assert [c[:2] for c in found] == [
        ["python", "scripts/serve.py"],
        ["python", "loadtest/run_loadtest.py"],
        ["bash", "scripts/gpu_check.sh"],
        ["python", "-m"],
    ]
    assert shown_flags(found[0][2:]) == ["--timeout"]
    assert shown_flags(found[1][2:]) == ["--host", "--users"]
    assert shown_flags(found[3][3:]) == ["--inference-url", "--key-file"]

"""Every code block of README.md and docs/*.md runs, in document order, as a reader would run it.

One test per document; its blocks run in order in one temporary folder (the working directory), so a
file written by an earlier block is there for a later command. By the language of the fence:

- ``python``: executed in one namespace per document (blocks build on each other, like a notebook),
  with the folder on ``sys.path``. A block whose first line is ``# NAME.py`` (optionally followed by
  ``:`` or a space and a comment) is also written to ``NAME.py``, a module a later block or command imports.
- ``toml``: must parse; one whose first line is ``# NAME.toml`` (the same way) is written to ``NAME.toml``.
- ``bash`` / ``sh``: each command (``\\`` continuations joined, ``#`` comments and ``&&`` chains
  split off) must exit 0. ``composer ...`` runs in this process (``composer.cli.main``), ``python -m X``
  and ``torchrun`` in a subprocess of this interpreter. Environment setup is not repeated: a line that
  makes or activates a virtual environment (``python3 -m venv``, ``. .venv/bin/activate``) or runs
  ``pip install`` is skipped, because the test environment has the packages installed already (the
  template test, ``tests/test_template_install.py``, does a real offline install).
- ``console``: ``$ command`` lines run like bash commands, and the lines up to the next ``$`` must
  equal the command's output (stdout, then stderr), exit code ignored.
- ``text``: output, grammars, listings; not run. A fence without a language is an error.

Directives, HTML comments on the lines just before a fence (invisible when the page is rendered):

- ``<!-- docs-test: skip REASON -->``: not run (kept rare; every skip is listed in the output).
- ``<!-- docs-test: file PATH -->``: the block must be identical to the repository file ``PATH``
  (the guide shows the template's files; the template's own tests run them).
- ``<!-- docs-test: replace OLD => NEW -->``: run the block with ``OLD`` replaced by ``NEW`` (scales an
  expensive command down, e.g. training steps; listed in the output).
- ``<!-- docs-test: env NAME=VALUE ... -->``: environment of the block's commands.

Run ``python tests/test_docs.py`` to print the inventory of blocks, skips and replacements.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(\w+)\s*(.*?)\s*-->")
LANGUAGES = ("python", "toml", "bash", "sh", "console", "text")
SETUP = re.compile(r"^(python3? -m venv|\. \S*activate|source \S*activate|(python3? -m )?pip install)\b")


@dataclass
class Block:
    """A fenced code block: where it is, its language, its text and its directives."""

    document: Path
    line: int
    language: str
    code: str
    directives: list[tuple[str, str]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"

    def directive(self, name: str) -> list[str]:
        return [arg for kind, arg in self.directives if kind == name]


def blocks(document: Path) -> list[Block]:
    """The fenced blocks of ``document`` with the directives in the comment lines just above each."""
    text = document.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").splitlines()
        directives = []
        while before and (before[-1].strip().startswith("<!--") or not before[-1].strip()):
            directives += [(k, a) for k, a in DIRECTIVE.findall(before.pop())]
        line = text.count("\n", 0, m.start()) + 1
        out.append(Block(document, line, m.group(1).strip(), m.group(2), directives[::-1]))
    return out


def commands(code: str) -> list[list[str]]:
    """Shell commands of a bash block: continuations joined, comments dropped, ``&&`` chains split."""
    out: list[list[str]] = []
    for line in code.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        while tokens:
            cut = tokens.index("&&") if "&&" in tokens else len(tokens)
            out.append(tokens[:cut])
            tokens = tokens[cut + 1 :]
    return [c for c in out if c]


class Runner:
    """Runs one document's blocks in ``folder`` with a shared Python namespace."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.namespace: dict[str, object] = {"__name__": "__docs__", "__file__": str(folder / "docs_block.py")}
        self.env: dict[str, str] = {}

    def run(self, block: Block) -> None:
        code = block.code
        for rule in block.directive("replace"):
            old, new = (s.strip() for s in rule.split("=>"))
            assert old in code, f"{block.where}: replace directive: '{old}' is not in the block"
            code = code.replace(old, new)
        self.env = dict(a.split("=", 1) for arg in block.directive("env") for a in arg.split())
        first = code.splitlines()[0] if code.strip() else ""
        named = re.match(r"#\s*([\w./-]+\.(?:py|toml))(?::|\s|$)", first.strip())
        if block.language == "python":
            if named:
                (self.folder / named.group(1)).write_text(code)
            exec(compile(code, block.where, "exec"), self.namespace)
        elif block.language == "toml":
            tomllib.loads(code)  # a TOML block must parse
            if named:
                (self.folder / named.group(1)).write_text(code)
        elif block.language in ("bash", "sh"):
            for argv in commands(code):
                if SETUP.match(shlex.join(argv)):
                    continue
                rc, out = self.command(argv)
                assert rc == 0, f"{block.where}: `{shlex.join(argv)}` exited {rc}:\n{out[-3000:]}"
        elif block.language == "console":
            self.console(block, code)

    def console(self, block: Block, code: str) -> None:
        parts = re.split(r"^\$ ", code, flags=re.M)
        for part in parts[1:]:
            command, _, expected = part.partition("\n")
            _, out = self.command(shlex.split(command))
            got = [s.rstrip() for s in out.rstrip("\n").splitlines()]
            want = [s.rstrip() for s in expected.rstrip("\n").splitlines()]
            assert got == want, f"{block.where}: `$ {command}` printed\n" + "\n".join(got)

    def command(self, argv: list[str]) -> tuple[int, str]:
        """Run one command in the folder; ``(exit code, stdout + stderr)``."""
        if argv[0] == "composer":
            return self.composer(argv[1:])
        if argv[0] in ("python", "python3") and len(argv) > 2 and argv[1] == "-m":
            argv = [sys.executable, *argv[1:]]
        elif argv[0] == "torchrun":
            argv = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
        else:
            raise AssertionError(f"the docs harness cannot run `{shlex.join(argv)}`")
        env = {**os.environ, "OMP_NUM_THREADS": "1", **self.env}
        done = subprocess.run(argv, cwd=self.folder, env=env, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout + done.stderr

    def composer(self, args: list[str]) -> tuple[int, str]:
        from composer.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _environ(self.env):
            rc = main(args)
        return rc, out.getvalue() + err.getvalue()


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def inventory() -> str:
    """One line per document (blocks by language), then every skip and replacement."""
    lines = []
    for doc in DOCUMENTS:
        bs = blocks(doc)
        counts = {lang: sum(b.language == lang for b in bs) for lang in LANGUAGES}
        lines.append(f"{doc.relative_to(ROOT)}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
        for b in bs:
            for kind in ("skip", "replace", "env"):
                for arg in b.directive(kind):
                    lines.append(f"  {b.where} {kind}: {arg}")
    return "\n".join(lines)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_runs(document, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = Runner(tmp_path)
    for block in blocks(document):
        assert block.language in LANGUAGES, f"{block.where}: give the fence a language, one of {LANGUAGES}"
        if block.directive("skip"):
            continue
        for path in block.directive("file"):
            assert block.code == (ROOT / path).read_text(), f"{block.where}: differs from {path}"
            break
        else:
            runner.run(block)


def test_skips_are_rare_and_listed(capsys):
    skips = [b for doc in DOCUMENTS for b in blocks(doc) if b.directive("skip")]
    with capsys.disabled():
        print("\n" + inventory())
    assert all(b.directive("skip")[0].strip() for b in skips), "every skip gives its reason"
    assert len(skips) <= 3, [b.where for b in skips]


def test_harness_parses_commands_and_directives(tmp_path):
    assert commands("a b && c 'd # e' # note\nf \\\n  g\n") == [["a", "b"], ["c", "d # e"], ["f", "g"]]
    doc = tmp_path / "d.md"
    doc.write_text("x\n<!-- docs-test: replace 800 => 40 -->\n\n```bash\ncomposer list\n```\n")
    (block,) = blocks(doc)
    assert (block.language, block.line, block.directive("replace")) == ("bash", 4, ["800 => 40"])


def test_api_page_is_current():
    from composer.docgen import DEFAULT_PATH, generate

    assert DEFAULT_PATH.read_text() == generate(), "docs/api.md is stale: run `python -m composer.docgen`"


if __name__ == "__main__":
    print(inventory())

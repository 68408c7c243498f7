"""The README and docs/ stay true: every setting documented with its default, the README
short and linking every page, every path and module they name real, CI running the
README's test command."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from inbox_asgi.config import option_specs

from .support import ROOT

README = (ROOT / "README.md").read_text()
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [ROOT / "README.md", *PAGES]

#: A path in the repository: tests/….py, src/….py, or anything under bench/ (not inside another path).
PATH = re.compile(r"(?<![\w./-])((?:tests/[\w./-]*\.py|src/[\w./-]*\.py|bench/[\w./-]*[\w/]))")
#: A dotted module (or an attribute of one) of the package: inbox_asgi.x.y.
MODULE = re.compile(r"(?<![\w.])(inbox_asgi(?:\.\w+)+)")
#: What the benchmarks write; git ignores it, so a fresh clone has none.
OUTPUTS = ("bench/results",)


def test_every_setting_is_in_the_flags_table() -> None:
    for name, default, _, _ in option_specs():
        env = "INBOX_" + name.upper().replace("-", "_")
        shown = f"`{default}`" if default else "(unset)"
        assert f"| `-{name}` | `{env}` | {shown} |" in README, name


def test_readme_is_short() -> None:
    assert len(README.encode()) < 12 * 1024


def test_readme_links_every_page() -> None:
    assert PAGES
    for page in PAGES:
        assert f"](docs/{page.name})" in README, page.name


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_path_mentioned_exists(document: Path) -> None:
    paths = set(PATH.findall(document.read_text()))
    missing = [path for path in paths if not path.startswith(OUTPUTS) and not (ROOT / path).exists()]
    assert not missing, f"{document.name} names paths that do not exist: {sorted(missing)}"


def resolves(dotted: str) -> bool:
    """An importable module, or an attribute of the longest importable prefix."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:end]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[end:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_module_mentioned_imports(document: Path) -> None:
    names = set(MODULE.findall(document.read_text()))
    missing = sorted(name for name in names if not resolves(name))
    assert not missing, f"{document.name} names modules that do not import: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    assert "bash scripts/test.sh" in README
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()

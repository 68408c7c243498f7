"""The README and docs/ stay true: every setting documented with its default, the README
short and linking every page, every path and module they name real, CI running the
README's test command."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from inbox_asgi.config import option_specs
from inbox_asgi.tokens import TokenVerifier, issue

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


# -- The README's token snippets (SPEC section 7): each run where its tool exists --------------

TOKEN_SECRET = "readme-secret_0123-+/="
TOKEN_SECTION = README.split("## Access tokens and TURN", 1)[1].split("\n## ", 1)[0]


def token_snippet(language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", TOKEN_SECTION, re.DOTALL)
    assert match, f"no {language} snippet in the README's token section"
    return match.group(1)


def assert_valid_token(output: str) -> None:
    token = output.strip()
    assert TokenVerifier([TOKEN_SECRET]).valid("alice", token, time.time()), token
    assert 3590 <= int(token.split(":")[0]) - time.time() <= 3600


def run_snippet(command: list[str], cwd: Path | None = None) -> str:
    env = {**os.environ, "INBOX_AUTH_SECRET": TOKEN_SECRET}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_readme_shell_snippet_mints_a_valid_token() -> None:
    assert shutil.which("openssl"), "openssl is needed for the README's shell snippet"
    assert_valid_token(run_snippet(["bash", "-c", token_snippet("sh")]))


def test_readme_node_snippet_mints_a_valid_token() -> None:
    snippet = token_snippet("js")
    if shutil.which("node"):
        assert_valid_token(run_snippet(["node", "-e", snippet]))
    else:  # no Node here: check the snippet computes what the SPEC says, step by step
        assert "createHmac('sha256', secret)" in snippet and "digest('base64url')" in snippet
        assert "update(`${expiry}:${user}`)" in snippet and "`${expiry}:${" in snippet
        assert_valid_token(issue(TOKEN_SECRET, "alice", 3600))


def test_readme_go_snippet_mints_a_valid_token(tmp_path: Path) -> None:
    snippet = token_snippet("go")
    if shutil.which("go"):
        # The first line names the packages: "// Go (crypto/hmac, crypto/sha256, ...)".
        packages = re.findall(r"[\w/]+", snippet.splitlines()[0].split("(", 1)[1])
        imports = "".join(f'\t"{name}"\n' for name in packages)
        program = f"package main\n\nimport (\n{imports})\n\nfunc main() {{\n{snippet}}}\n"
        (tmp_path / "main.go").write_text(program)
        assert_valid_token(run_snippet(["go", "run", "main.go"], cwd=tmp_path))
    else:
        assert "hmac.New(sha256.New, []byte(secret))" in snippet and "RawURLEncoding" in snippet
        assert '"%d:%s", expiry, user' in snippet
        assert_valid_token(issue(TOKEN_SECRET, "alice", 3600))

"""The README stays true: every setting documented with its default, CI runs its test command."""

from __future__ import annotations

from inbox_asgi.config import option_specs

from .support import ROOT

README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_flags_table() -> None:
    for name, default, _, _ in option_specs():
        env = "INBOX_" + name.upper().replace("-", "_")
        shown = f"`{default}`" if default else "(unset)"
        assert f"| `-{name}` | `{env}` | {shown} |" in README, name


def test_ci_runs_the_readme_test_command() -> None:
    assert "bash scripts/test.sh" in README
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()

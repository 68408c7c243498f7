from __future__ import annotations

import logging
from pathlib import Path

import pytest

from inbox_asgi.app import create_app
from inbox_asgi.config import Settings
from inbox_asgi.http.static import BUNDLED, CHECKOUT, public_directory

from ..conftest import ClientFactory

pytestmark = pytest.mark.anyio


async def test_root_serves_the_index_page(make_client: ClientFactory) -> None:
    async with make_client() as client:
        response = await client.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "inbox-asgi" in response.text


async def test_serves_files_from_the_configured_directory(make_client: ClientFactory, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hi there")
    async with make_client(public=str(tmp_path)) as client:
        assert (await client.get("/hello.txt")).text == "hi there"
        assert (await client.get("/missing.txt")).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/%2E%2E/%2E%2E/etc/passwd",
        "/sub/../../pyproject.toml",
        "/..%2fpyproject.toml",
        "/..%5cpyproject.toml",
        "/sub/..",
        "/sub/%2e%2e/inner.txt",
    ],
)
async def test_traversal_is_404_never_a_redirect(
    make_client: ClientFactory, tmp_path: Path, path: str
) -> None:
    public = tmp_path / "public"
    (public / "sub").mkdir(parents=True)
    (public / "sub" / "inner.txt").write_text("inner")
    (tmp_path / "pyproject.toml").write_text("SECRET")
    async with make_client(public=str(public)) as client:
        # httpx would normalise dot segments itself, so send the raw path.
        request = client.build_request("GET", "http://testserver/")
        request.url = request.url.copy_with(raw_path=path.encode())
        response = await client.send(request)
        assert response.status_code == 404
        assert "SECRET" not in response.text


async def test_healthz(make_client: ClientFactory) -> None:
    async with make_client() as client:
        response = await client.get("/healthz")
        assert (response.status_code, response.text.strip()) == (200, "ok")


def test_missing_public_directory_falls_back_to_bundled_pages(tmp_path: Path) -> None:
    chosen = public_directory(str(tmp_path / "does-not-exist"))
    assert chosen in (BUNDLED, CHECKOUT)
    assert (chosen / "index.html").is_file()


def test_a_mistyped_public_directory_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    typo = str(tmp_path / "pubilc")
    with caplog.at_level(logging.INFO, logger="inbox_asgi"):
        create_app(Settings(public=typo))
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert typo in warnings[0].getMessage()
    assert "bundled" in warnings[0].getMessage()


def test_the_default_public_directory_missing_is_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed package run outside a checkout has no ./public: the bundled pages are the plan."""
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="inbox_asgi"):
        create_app(Settings())
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert any("bundled" in record.getMessage() for record in caplog.records)

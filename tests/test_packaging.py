"""The ways the server is started: the Dockerfile's command, `uvicorn inbox_asgi:app`, the wheel."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from .support import ROOT, ServerProcess, basic, clean_env, free_port, wait_until


def dockerfile_instruction(keyword: str) -> str:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    matches = re.findall(rf"^{keyword}\s+(.*)$", text, re.MULTILINE)
    assert matches, keyword
    return str(matches[-1])


def dockerfile_env() -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", dockerfile_instruction("ENV")))


def start(command: list[str], env: dict[str, str], cwd: Path, base_url: str, ca: str | None) -> ServerProcess:
    log = cwd / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=clean_env(env), stdout=out, stderr=subprocess.STDOUT)
    server = ServerProcess(process, base_url, ca, log)

    def ready() -> bool:
        assert process.poll() is None, server.log()
        try:
            return httpx.get(f"{base_url}/healthz", verify=server.verify).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, timeout=20)
    return server


def test_dockerfile_command_serves_bundled_pages_over_tls(
    tmp_path: Path, tls_files: tuple[str, str, str]
) -> None:
    cert, key, ca = tls_files
    env = dockerfile_env()
    assert env["INBOX_SERVER_CERT"].startswith("/certs/") and env["INBOX_BIND"].endswith(":3000")
    port = free_port()
    # The image's environment, with the mounted /certs and the port swapped for test ones.
    env |= {"INBOX_SERVER_CERT": cert, "INBOX_SERVER_KEY": key, "INBOX_BIND": f"127.0.0.1:{port}"}
    command = json.loads(dockerfile_instruction("CMD"))
    healthcheck = json.loads(dockerfile_instruction("HEALTHCHECK").split(" CMD ", 1)[1])
    executable = Path(sys.executable).parent
    command[0] = str(executable / command[0])
    healthcheck[0] = sys.executable  # the image's `python`
    server = start(command, env, tmp_path, f"https://127.0.0.1:{port}", ca)  # tmp_path has no public/
    try:
        index = httpx.get(f"{server.base_url}/", verify=server.verify)
        assert index.status_code == 200 and "<html" in index.text.lower()
        assert subprocess.run(healthcheck, env=clean_env(env), cwd=tmp_path, timeout=20).returncode == 0
    finally:
        assert server.stop() == 0
    probe_env = clean_env(env)
    assert (
        subprocess.run(healthcheck, env=probe_env, cwd=tmp_path, timeout=20, capture_output=True).returncode
        == 1
    )


def test_uvicorn_import_string_reads_inbox_environment(tmp_path: Path) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "inbox_asgi:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    env = {"INBOX_INBOX_CAPACITY": "1", "INBOX_LONG_POLLING": "false"}
    server = start(command, env, tmp_path, f"http://127.0.0.1:{port}", None)
    try:
        with server.client() as client:
            assert client.get("/").status_code == 200
            assert client.get("/inbox", headers=basic("r")).status_code == 204
            codes = [client.post("/inbox?to=r", headers=basic("s")).status_code for _ in range(2)]
            assert codes == [200, 503]
    finally:
        server.stop()


@pytest.mark.slow
def test_wheel_bundles_the_demo_pages(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("inbox_asgi-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for page in ("index.html", "send.html", "receive.html", "signal_channel.js", "webrtc.js"):
        assert f"inbox_asgi/public/{page}" in names
    assert "inbox_asgi/py.typed" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"inbox-asgi = inbox_asgi.cli:main" in entry_points

"""``medseg serve`` as a user starts it: a real uvicorn process on loopback, the token rule for other
hosts, and clear refusals of bad options."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from medseg.cli import main
from medseg.serve import needs_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    """Start ``medseg serve ARGS`` and return it with the address line it printed."""
    process = subprocess.Popen([sys.executable, "-m", "medseg.cli", "serve", "--model", "litemedsam-tiny", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = process.stdout.readline()
    if not line:
        process.kill()
        pytest.fail(f"medseg serve did not start: {process.stderr.read()}")
    return process, line.strip()


def get(url: str, headers: dict | None = None, attempts: int = 50) -> tuple[int, dict]:
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except (ConnectionError, urllib.error.URLError):
            time.sleep(0.2)
    raise AssertionError(f"no answer from {url}")


def test_serves_on_loopback_without_a_token(tmp_path):
    port = free_port()
    process, line = start(["--port", str(port), "--root", str(tmp_path)])
    try:
        assert line == f"medseg serve: open http://127.0.0.1:{port}/"
        status, body = get(f"http://127.0.0.1:{port}/api/health")
        assert status == 200 and body["model"] == "litemedsam-tiny" and body["root"] is True
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_another_host_warns_and_requires_the_token():
    port = free_port()
    process, line = start(["--host", "0.0.0.0", "--port", str(port)])
    try:
        token = line.rsplit("?token=", 1)[1]
        assert len(token) >= 24
        assert get(f"http://127.0.0.1:{port}/api/health")[0] == 401
        assert get(f"http://127.0.0.1:{port}/api/health", {"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert "reachable from other machines" in process.stderr.read()


def test_loopback_rule():
    assert not needs_token("127.0.0.1") and not needs_token("::1") and not needs_token("localhost")
    assert needs_token("0.0.0.0") and needs_token("192.168.1.5") and needs_token("example.org")


@pytest.mark.parametrize("args, words", [
    (["--port", "0"], "--port 0: give 1..65535"),
    (["--max-upload-mb", "-1"], "--max-upload-mb -1"),
    (["--root", "/no/such/folder"], "--root /no/such/folder: not a folder"),
    (["--model", "no-such-model"], "model 'no-such-model' cannot be prompted"),
])
def test_bad_options_are_refused(capsys, args, words):
    assert main(["serve", "--model", "litemedsam-tiny", *args]) == 2
    assert words in capsys.readouterr().err

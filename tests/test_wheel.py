"""The built wheel is self-contained: installed into a fresh venv, it serves the widget and runs the demo."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import site
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP proxy from the env
ASSETS = (
    "feedback_bridge/assets/widget/feedback-widget.min.js",
    "feedback_bridge/assets/templates/feedback_bridge/base.html",
    "feedback_bridge/assets/templates/feedback_bridge/demo.html",
    "feedback_bridge/assets/static/feedback_bridge/demo.css",
    "feedback_bridge/assets/static/feedback_bridge/demo.js",
    "feedback_bridge/__main__.py",
    "feedback_bridge/demo.py",
    "feedback_bridge/demo_answers.py",
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    outside: Path  # a working directory outside the repository

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


def _clean_env() -> dict[str, str]:
    """The caller's environment without anything that could point imports or settings back at the repo."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FEEDBACK_")}


def _run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    # Build with the hatchling already installed when there is one (offline, quick); else let build fetch it.
    isolation = ["--no-isolation"] if importlib.util.find_spec("hatchling") else []
    _run(sys.executable, "-m", "build", "--wheel", *isolation, "--outdir", dist, REPO, cwd=root)
    (wheel,) = dist.glob("feedback_bridge-*.whl")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=root)  # with its own pip, from ensurepip (offline)
    # Runtime dependencies (Flask, SQLAlchemy...) come from this test run's own environment through a .pth
    # file, listed after the venv's own site-packages. Folders named in a .pth do not get their own .pth
    # files processed, so the repository's editable install stays invisible: only the wheel is importable.
    venv_site = _run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=root).strip()
    parent_sites = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])
    (Path(venv_site) / "zz_test_runtime_deps.pth").write_text("\n".join(parent_sites) + "\n")
    _run(venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel, cwd=root)
    outside = root / "elsewhere"
    outside.mkdir()
    return Installed(wheel=wheel, venv=venv, outside=outside)


def test_wheel_contains_the_assets(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = wheel.read(entry_points).decode()
        packed_widget = wheel.read("feedback_bridge/assets/widget/feedback-widget.min.js")
    assert set(ASSETS) <= names, sorted(set(ASSETS) - names)
    assert "feedback-bridge = feedback_bridge.__main__:main" in scripts
    assert packed_widget == (REPO / "widget" / "feedback-widget.min.js").read_bytes()


def test_installed_copy_is_used_outside_the_repo(installed: Installed) -> None:
    code = (
        "import json, feedback_bridge\n"
        "from feedback_bridge.resources import resource_dir\n"
        "print(json.dumps([feedback_bridge.__file__] + [str(resource_dir(n)) for n in "
        "('widget', 'templates', 'static')]))\n"
    )
    paths = json.loads(_run(installed.bin("python"), "-c", code, cwd=installed.outside))
    venv = installed.venv.resolve()
    for path in paths:
        assert Path(path).resolve().is_relative_to(venv), (path, venv)
    assert not any(Path(path).resolve().is_relative_to(REPO) for path in paths)


SEEDED = 200  # events the installed demo is started with (--seed)


@dataclass(frozen=True)
class Server:
    base: str
    log: Path


@pytest.fixture
def demo_server(installed: Installed, tmp_path) -> Iterator[Server]:
    """``<venv>/bin/feedback-bridge demo`` on a free port, once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(installed.bin("feedback-bridge")), "demo", "--port", str(port), "--data-dir", str(tmp_path / "d"),
             "--seed", str(SEEDED)],
            cwd=installed.outside, env=_clean_env(), stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with LOCAL.open(f"{base}/feedback/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"the demo did not answer:\n{log_path.read_text()}"
            try:  # the pause between attempts; it ends at once if the server dies
                code = server.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"the demo exited with {code}:\n{log_path.read_text()}")
        yield Server(base, log_path)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with LOCAL.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:  # urllib raises for 304 too
        return exc.code, dict(exc.headers), exc.read()


def test_installed_demo_serves_the_widget_and_page(demo_server: Server) -> None:
    base = demo_server.base
    assert f"{base}/" in demo_server.log.read_text()  # the URL it printed on start
    status, headers, body = _get(f"{base}/feedback/widget.js")
    assert status == 200
    assert body == (REPO / "widget" / "feedback-widget.min.js").read_bytes()  # the built widget, shipped in the wheel
    assert headers["Content-Type"].startswith("text/javascript")
    etag = headers.get("ETag")
    assert etag
    status, _, body = _get(f"{base}/feedback/widget.js", **{"If-None-Match": etag})
    assert (status, body) == (304, b"")

    status, headers, page = _get(f"{base}/")
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    html = page.decode()
    assert '<script src="/feedback/widget.js?v=' in html and 'data-attach=".assistant-message"' in html
    cookie = headers["Set-Cookie"].split(";")[0]
    ask = urllib.request.Request(f"{base}/ask", data=json.dumps({"question": "VPN?"}).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Cookie": cookie})
    with LOCAL.open(ask, timeout=30) as response:
        lines = [json.loads(line) for line in response.read().decode().splitlines()]
    assert len(lines) > 10 and "token" in lines[-1]
    status, _, page = _get(f"{base}/", Cookie=cookie)
    assert f'data-feedback-token="{lines[-1]["token"]}"' in page.decode()  # the answer, on reload

    for name, kind in (("demo.css", "text/css"), ("demo.js", "text/javascript")):
        status, headers, _ = _get(f"{base}/feedback/static/feedback_bridge/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind)


def test_installed_demo_seeds_its_store_and_serves_the_dashboard(demo_server: Server) -> None:
    base = demo_server.base
    assert f"added {SEEDED} seeded events" in demo_server.log.read_text()
    status, headers, body = _get(f"{base}/feedback/dashboard/")  # the demo admits loopback
    assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
    page = body.decode()
    assert "<h1>Overview</h1>" in page and 'id="health"' in page
    stylesheet = re.search(r'href="([^"]*dashboard\.css[^"]*)"', page)
    assert stylesheet, "the dashboard links its stylesheet"
    status, _, css = _get(base + stylesheet.group(1).replace("&amp;", "&"))  # packed in the wheel
    assert status == 200 and css == (REPO / "static" / "feedback_bridge" / "dashboard.css").read_bytes()
    status, _, export = _get(f"{base}/feedback/dashboard/export?format=jsonl")
    assert status == 200 and len(export.splitlines()) == SEEDED

"""The wheel, installed into a fresh virtual environment, migrates and starts from any folder.

Built from a copy of the sources (pip builds in the source tree, and other runs may share it),
without build isolation (no network); the new environment reaches the dependencies through a
.pth file to this interpreter's site-packages, so only Parley itself is installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import httpx
import pytest
from packaging.version import Version

from tests.server import free_port

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    "pyproject.toml",
    "README.md",
    "hypercorn.toml",
    "chat",
    "actors",
    "storage",
    "migrations",
]


def sh(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def can_build_wheels() -> bool:
    """Whether this environment's setuptools can build a wheel without downloading anything."""
    try:
        setuptools = Version(version("setuptools"))
    except PackageNotFoundError:
        return False
    return setuptools >= Version("70.1") or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module", name="wheel")
def fixture_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # Building here needs setuptools' bdist_wheel: its own from 70.1, the `wheel` package's
    # before. Without either, pip builds in an isolated environment it downloads (slower).
    isolation = ["--no-build-isolation"] if can_build_wheels() else []
    sh(*pip, "wheel", "--quiet", "--no-deps", *isolation, "-w", out, ".", cwd=source)
    (wheel,) = out.glob("parley-*.whl")
    return wheel


@pytest.fixture(scope="module", name="venv")
def fixture_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    sh(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    python = venv / "bin" / "python"
    site = sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv)
    Path(site.strip(), "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", python]
    sh(*pip, "install", "--quiet", "--no-deps", wheel, cwd=venv)
    return venv


def test_the_wheel_ships_the_migrations_and_the_server_settings(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    revisions = {p.name for p in (ROOT / "migrations" / "versions").glob("*.py")}
    assert {"migrations/env.py", "migrations/script.py.mako", "chat/hypercorn.toml"} <= names
    assert {f"migrations/versions/{name}" for name in revisions} <= names
    shipped = zipfile.ZipFile(wheel).read("chat/hypercorn.toml")
    assert shipped == (ROOT / "hypercorn.toml").read_bytes()


def test_the_installed_parley_migrates_and_starts_from_another_folder(
    venv: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        "PATH": str(venv / "bin"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'parley.db'}",
        "PARLEY_VAR_DIR": str(tmp_path / "var"),
        "LOG_LEVEL": "warning",
    }
    parley = venv / "bin" / "parley"
    where = sh(
        venv / "bin" / "python",
        "-c",
        "import chat; print(chat.__file__)",
        cwd=elsewhere,
    )
    assert Path(where.strip()).is_relative_to(venv), "the test must run the installed copy"
    assert "latest revision" in sh(parley, "migrate", cwd=elsewhere, env=env)
    # `serve` reads its default Hypercorn settings and checks the schema, then meets a busy
    # port: all of start-up but the serving itself, without waiting for a server.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [parley, "serve", "--bind", f"127.0.0.1:{port}"],
            cwd=elsewhere,
            env=env | {"LOG_LEVEL": "info"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert os.path.exists(tmp_path / "parley.db")


def test_the_installed_parley_serves_the_chat_page(wheel: Path, venv: Path, tmp_path: Path) -> None:
    """The page's files are package data: the installed copy serves them from anywhere."""
    page = {f"chat/web/{p.name}" for p in (ROOT / "chat" / "web").iterdir()}
    assert page <= set(zipfile.ZipFile(wheel).namelist())
    env = {
        "PATH": str(venv / "bin"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'parley.db'}",
        "PARLEY_VAR_DIR": str(tmp_path / "var"),
        "LOG_LEVEL": "warning",
    }
    parley = venv / "bin" / "parley"
    sh(parley, "migrate", cwd=tmp_path, env=env)
    url = f"http://127.0.0.1:{free_port()}"
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [parley, "serve", "--bind", url.removeprefix("http://")],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        shell = get_when_up(url + "/", server)
        assert shell.status_code == 200
        assert shell.headers["Content-Type"].startswith("text/html")
        assert '<script type="module" src="/web/app.js"></script>' in shell.text
        assert "script-src 'self'" in shell.headers["Content-Security-Policy"]
        script = httpx.get(url + "/web/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["Content-Type"]
        assert script.content == (ROOT / "chat" / "web" / "app.js").read_bytes()
    finally:
        server.terminate()
        server.wait(timeout=30)


def get_when_up(url: str, server: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "the installed server exited"
        try:
            return httpx.get(url)
        except httpx.TransportError:
            time.sleep(0.05)  # not listening yet: the refused connect is the wait
    raise AssertionError(f"{url} did not answer within 60 s")

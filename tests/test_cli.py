"""`parley` as a user runs it: from any folder, every failure one line on stderr, no traceback."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import anyio
import pytest
from alembic import command

from chat.credentials import Passwords
from chat.settings import load_settings
from storage.database import create_database
from storage.revision import head_revision, known_revisions
from storage.users import select_user_by_email
from tests import databases
from tests.server import free_port

HEAD = head_revision()
PASSWORD = "correct horse"


def run(
    tmp_path: Path, *args: str, input: str | None = None, **settings: str
) -> subprocess.CompletedProcess[str]:
    """`parley ARGS` in a folder of its own (not the repository), with only these settings."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PARLEY_VAR_DIR": str(tmp_path / "var"),
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "64",
        "LOG_LEVEL": "warning",
        **{k.upper(): v for k, v in settings.items()},
    }
    return subprocess.run(
        [sys.executable, "-m", "chat.cli", *args],
        env=env,
        cwd=cwd,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr, and it is an `error:` line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(name="sqlite_url")
def fixture_sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'parley.db'}"


@pytest.fixture(name="migrated_url")
def fixture_migrated_url(tmp_path: Path, sqlite_url: str) -> str:
    result = run(tmp_path, "migrate", database_url=sqlite_url)
    assert result.returncode == 0, result.stderr
    return sqlite_url


@pytest.fixture(name="closed_port_url")
def fixture_closed_port_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/test"


@pytest.fixture(name="busy_port")
def fixture_busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_version_is_the_package_version(tmp_path: Path) -> None:
    result = run(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"parley {version('parley')}"


def test_migrate_from_another_folder_then_again(tmp_path: Path, sqlite_url: str) -> None:
    for _ in range(2):
        result = run(tmp_path, "migrate", database_url=sqlite_url)
        assert result.returncode == 0, result.stderr
        assert "latest revision" in result.stdout


def test_log_level_in_any_case(tmp_path: Path, sqlite_url: str) -> None:
    result = run(tmp_path, "migrate", database_url=sqlite_url, log_level="Info")
    assert result.returncode == 0, result.stderr
    assert "Running upgrade" in result.stderr  # Alembic's INFO lines: the level took effect
    for level in ("info", "Warning", " ERROR "):
        environ = {"PARLEY_VAR_DIR": str(tmp_path / "var"), "LOG_LEVEL": level}
        assert load_settings(environ).log_level == level.strip().upper()


def test_an_unsupported_database_scheme_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(run(tmp_path, "migrate", database_url="mysql://u@localhost/parley"))
    assert line.startswith("error: invalid setting DATABASE_URL: unsupported database 'mysql'")


def test_serve_refuses_a_database_never_migrated(tmp_path: Path, sqlite_url: str) -> None:
    result = run(tmp_path, "serve", "--bind", f"127.0.0.1:{free_port()}", database_url=sqlite_url)
    assert one_error_line(result) == (
        f'error: the database is at revision none, the code needs {HEAD}; run "parley migrate"'
    )


def test_serve_refuses_a_database_behind_the_code(tmp_path: Path, sqlite_url: str) -> None:
    older = sorted(known_revisions() - {HEAD})
    if not older:
        pytest.skip("there is only one revision")
    url = f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
    databases.in_thread(lambda: command.upgrade(databases.alembic_config(url), older[-1]))
    result = run(tmp_path, "serve", "--bind", f"127.0.0.1:{free_port()}", database_url=sqlite_url)
    assert one_error_line(result) == (
        f"error: the database is at revision {older[-1]}, the code needs {HEAD}; "
        'run "parley migrate"'
    )


@pytest.mark.parametrize(
    "args",
    [
        ("migrate",),
        ("serve",),
        ("create-user", "--email", "a@b.io"),
        ("user", "deactivate", "a@b.io"),
    ],
)
def test_an_unreachable_database_is_one_line(
    tmp_path: Path, closed_port_url: str, args: tuple[str, ...]
) -> None:
    result = run(tmp_path, *args, input=PASSWORD + "\n", database_url=closed_port_url)
    line = one_error_line(result)
    assert line.startswith(
        "error: cannot use the database postgresql+asyncpg://postgres@127.0.0.1:"
    )


@pytest.mark.parametrize("args", [("migrate",), ("serve",)])
def test_a_missing_postgres_database_is_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    if not databases.postgres_available() and not databases.REQUIRED:
        pytest.skip("PostgreSQL is not reachable")
    url = databases.PG_ADMIN_URL.rsplit("/", 1)[0] + "/parley_no_such_database"
    line = one_error_line(run(tmp_path, *args, database_url=url))
    assert line.endswith(': database "parley_no_such_database" does not exist')


@pytest.mark.parametrize("args", [("migrate",), ("serve",), ("create-user", "--email", "a@b.io")])
def test_a_sqlite_file_in_a_missing_folder_is_one_line(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    path = tmp_path / "missing" / "parley.db"
    result = run(tmp_path, *args, input=PASSWORD + "\n", database_url=f"sqlite:///{path}")
    assert one_error_line(result) == (
        f"error: cannot open the SQLite database {path}: no folder {path.parent}"
    )


def test_create_user_on_a_database_never_migrated(tmp_path: Path, sqlite_url: str) -> None:
    result = run(
        tmp_path, "create-user", "--email", "a@b.io", input=PASSWORD + "\n", database_url=sqlite_url
    )
    assert 'run "parley migrate"' in one_error_line(result)


def test_a_port_in_use_is_one_line_and_nothing_claims_to_serve(
    tmp_path: Path, migrated_url: str, busy_port: int
) -> None:
    result = run(
        tmp_path,
        "serve",
        "--bind",
        f"127.0.0.1:{busy_port}",
        database_url=migrated_url,
        log_level="info",
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "serving on" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{busy_port}: Address already in use"
    )


def test_a_missing_hypercorn_config_is_one_line(tmp_path: Path, migrated_url: str) -> None:
    path = tmp_path / "no-such.toml"
    result = run(tmp_path, "serve", "--config", str(path), database_url=migrated_url)
    assert one_error_line(result) == f"error: cannot read {path}: No such file or directory"


def user(url: str, email: str) -> tuple[bool, str]:
    """The stored user's active flag and password hash, read from the database itself."""

    async def read() -> tuple[bool, str]:
        db = create_database(url)
        await db.connect()
        try:
            found = await select_user_by_email(db, email)
        finally:
            await db.disconnect()
        assert found is not None
        return found.is_active, found.password_hash

    return anyio.run(read)


def password_is(tmp_path: Path, url: str, email: str, password: str) -> bool:
    passwords = Passwords.from_settings(load_settings({"PARLEY_VAR_DIR": str(tmp_path / "var")}))
    return anyio.run(passwords.verify, user(url, email)[1], password)


def create_ann(tmp_path: Path, url: str, email: str = "ann@example.com") -> None:
    """Create a user through the CLI, its password read from stdin."""
    created = run(
        tmp_path, "create-user", "--email", email, input=PASSWORD + "\n", database_url=url
    )
    assert created.returncode == 0, created.stderr


def test_deactivate_and_activate_a_user(tmp_path: Path, migrated_url: str) -> None:
    create_ann(tmp_path, migrated_url, "Ann@Example.com")
    result = run(tmp_path, "user", "deactivate", "ann@example.com", database_url=migrated_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "deactivated user ann@example.com"
    assert user(migrated_url, "ann@example.com")[0] is False
    result = run(tmp_path, "user", "activate", "ANN@example.com", database_url=migrated_url)
    assert result.returncode == 0, result.stderr
    assert user(migrated_url, "ann@example.com")[0] is True


def test_an_unknown_email_is_one_line(tmp_path: Path, migrated_url: str) -> None:
    for change in ("activate", "deactivate", "set-password"):
        result = run(
            tmp_path,
            "user",
            change,
            "nobody@example.com",
            input=PASSWORD + "\n",
            database_url=migrated_url,
        )
        assert one_error_line(result) == "error: there is no user with email nobody@example.com"


def test_set_password_reads_one_line_from_stdin(tmp_path: Path, migrated_url: str) -> None:
    create_ann(tmp_path, migrated_url)
    result = run(
        tmp_path,
        "user",
        "set-password",
        "ann@example.com",
        input="new secret 42\n",
        database_url=migrated_url,
    )
    assert result.returncode == 0, result.stderr
    assert password_is(tmp_path, migrated_url, "ann@example.com", "new secret 42")
    short = run(
        tmp_path,
        "user",
        "set-password",
        "ann@example.com",
        input="short\n",
        database_url=migrated_url,
    )
    assert one_error_line(short) == "error: the password must be 8 to 128 characters long"


def on_a_terminal(tmp_path: Path, url: str, args: list[str], typed: list[str]) -> tuple[int, str]:
    """Run `parley ARGS` on a terminal made here (not a controlling one, so getpass uses it),
    typing each line of `typed` once the prompt for it has appeared."""
    main, terminal = pty.openpty()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PARLEY_VAR_DIR": str(tmp_path / "var"),
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "64",
        "DATABASE_URL": url,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "chat.cli", *args],
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    try:
        output = anyio.run(type_at_prompts, main, typed)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
    return code, output.decode(errors="replace")


async def type_at_prompts(fd: int, typed: list[str]) -> bytes:
    """Type each line once its password prompt shows (getpass flushes what was typed ahead);
    then everything the program shows until it exits."""
    output = b""
    with anyio.fail_after(60):
        for line in typed:
            prompts = output.count(b"password")
            while output.count(b"password") == prompts:
                output += await read_terminal(fd)
            os.write(fd, (line + "\n").encode())
        while chunk := await read_terminal(fd):
            output += chunk
    return output


async def read_terminal(fd: int) -> bytes:
    """What the terminal shows next; empty once the program has closed it."""
    await anyio.wait_readable(fd)
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: every process holding the terminal has exited
        return b""


def test_set_password_prompts_twice_at_a_terminal(tmp_path: Path, migrated_url: str) -> None:
    create_ann(tmp_path, migrated_url)
    args = ["user", "set-password", "ann@example.com"]
    code, output = on_a_terminal(tmp_path, migrated_url, args, ["typed twice", "typed twice"])
    assert code == 0, output
    assert password_is(tmp_path, migrated_url, "ann@example.com", "typed twice")
    code, output = on_a_terminal(tmp_path, migrated_url, args, ["first try", "second try"])
    assert code == 1
    assert "error: the two passwords differ" in output
    assert "Traceback" not in output

"""The process table, read from /proc: which MCP server processes a test left running."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio


def _state(pid_dir: Path) -> str:
    # /proc/<pid>/stat: "pid (comm) S ...", the state after the last ')'.
    return pid_dir.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]


def pids_with_env(name: str, value: str) -> set[int]:
    """Live (not zombie) processes whose environment has `name=value`."""
    wanted = f"{name}={value}".encode()
    found = set()
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            environ = pid_dir.joinpath("environ").read_bytes().split(b"\0")
            if wanted in environ and _state(pid_dir) != "Z":
                found.add(int(pid_dir.name))
        except (OSError, IndexError):
            # Gone meanwhile, or not ours to read.
            continue
    return found


async def wait_until(check: Callable[[], bool], deadline_s: float = 20.0) -> None:
    """Wait until `check()` holds (for what no event tells: a process table, a file)."""
    with anyio.fail_after(deadline_s):
        while True:
            if check():
                return
            await anyio.sleep(0.02)


async def wait_until_gone(pids: set[int], deadline_s: float = 20.0) -> None:
    """Wait until none of `pids` is a live process."""
    await wait_until(lambda: not any(_alive(pid) for pid in pids), deadline_s)


def _alive(pid: int) -> bool:
    try:
        return _state(Path(f"/proc/{pid}")) != "Z"
    except OSError:
        return False

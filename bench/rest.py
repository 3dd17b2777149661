"""Benchmark the REST API with wrk against a real server on PostgreSQL.

End to end: make a fresh database, migrate it, start `parley serve` without an access log,
register and log in a user through the API, seed that user's conversations and messages with
COPY, then measure each route with wrk at each concurrency, /healthz before and after as the
baseline. Prints a markdown table (and appends it to `--out`); the server is stopped and the
database dropped whatever happens.

    .venv/bin/python bench/rest.py --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
HEALTH_DEADLINE_S = 30.0
STOP_TIMEOUT_S = 10.0
BENCH_TITLE = "bench"
EMAIL = "bench@parley.example"
PASSWORD = "bench-password-1"
JSON_MARK = "BENCH_JSON "
MESSAGE_TEXT = (
    "Thanks for getting in touch. Your order shipped yesterday and should arrive within "
    "three working days; the tracking link is in the confirmation email we sent you."
)

# Prints the run's numbers as one JSON line; latency percentiles are in microseconds.
DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    "MARK", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end
""".replace("MARK", JSON_MARK)

POST_LUA = f"""
wrk.method = "POST"
wrk.body = '{{"title":"{BENCH_TITLE}"}}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass(frozen=True)
class Target:
    name: str
    path: str
    method: str = "GET"
    auth: bool = True
    lua: str = ""


@dataclass(frozen=True)
class WrkRun:
    requests: int
    duration_us: int
    p50_us: int
    p99_us: int
    status_errors: int
    socket_errors: int

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6)


@dataclass(frozen=True)
class Result:
    concurrency: int
    target: str
    run: WrkRun
    server_cpu: float
    wrk_cpu: float


@dataclass(frozen=True)
class Context:
    wrk: str
    base_url: str
    token: str
    server_pid: int
    scripts: dict[str, Path]
    database_url: str
    user_id: uuid.UUID


# --- command line and machine -------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20, help="per conversation")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="server")
    parser.add_argument("--admin-db", default="test", help="database to connect to for CREATE")
    parser.add_argument("--out", type=Path, help="append the markdown report to this file")
    args = parser.parse_args(argv)
    if min(args.concurrency) < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("concurrency and duration must be >= 1, warmup >= 0")
    return args


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit("error: wrk is not installed; on Debian: apt-get update && apt-get install -y wrk")
    return path


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_lines(wrk: str) -> list[str]:
    version = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout
    return [
        f"- machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{cpu_model()}, kernel {platform.release()}",
        f"- python {platform.python_version()}, {version.splitlines()[0] if version else 'wrk'}",
        f"- command: `{shlex.join([sys.executable, *sys.argv])}`",
    ]


# --- database -----------------------------------------------------------------------------


async def create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextmanager
def fresh_database(server_url: str, admin_db: str) -> Iterator[str]:
    """A new empty database for the run, dropped on exit; yields its URL."""
    name = f"parley_bench_{secrets.token_hex(4)}"
    admin_url = f"{server_url}/{admin_db}"
    asyncio.run(create_database(admin_url, name))
    try:
        yield f"{server_url}/{name}"
    finally:
        asyncio.run(drop_database(admin_url, name))


Record = tuple[object, ...]
Started = list[tuple[uuid.UUID, datetime]]


def conversation_records(user_id: uuid.UUID, started: Started, per: int) -> list[Record]:
    return [
        (conversation_id, user_id, f"Conversation {i}", False, at, at, per, 0, 30)
        for i, (conversation_id, at) in enumerate(started)
    ]


def message_records(started: Started, per: int) -> list[Record]:
    """`per` complete messages per conversation, seq 1.. with no gaps, user then assistant."""
    return [
        (
            uuid.uuid4(),
            conversation_id,
            seq,
            "user" if seq % 2 else "assistant",
            MESSAGE_TEXT,
            "complete",
            "[]",
            "[]",
            at + timedelta(seconds=seq),
        )
        for conversation_id, at in started
        for seq in range(1, per + 1)
    ]


CONVERSATION_COLUMNS = [
    "id",
    "user_id",
    "title",
    "title_set_by_user",
    "created_at",
    "updated_at",
    "total_messages",
    "total_tokens_used",
    "retention_days",
]
MESSAGE_COLUMNS = [
    "id",
    "conversation_id",
    "seq",
    "role",
    "content",
    "status",
    "entity_references",
    "entity_links",
    "created_at",
]


async def seed(url: str, user_id: uuid.UUID, count: int, per: int) -> list[uuid.UUID]:
    """COPY `count` conversations of `per` messages for the user; returns their ids."""
    start = datetime.now(UTC) - timedelta(days=count)
    started = [(uuid.uuid4(), start + timedelta(minutes=i)) for i in range(count)]
    conversations = conversation_records(user_id, started, per)
    messages = message_records(started, per)
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "conversations", records=conversations, columns=CONVERSATION_COLUMNS
            )
            await conn.copy_records_to_table("messages", records=messages, columns=MESSAGE_COLUMNS)
            await recount(conn, user_id)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return [conversation_id for conversation_id, _ in started]


async def recount(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Rows written behind the API's back: set the user's conversation count the API keeps."""
    await conn.execute(
        "UPDATE users SET total_conversations = (SELECT count(*) FROM conversations"
        " WHERE user_id = $1 AND deleted_at IS NULL) WHERE id = $1",
        user_id,
    )


async def delete_posted(url: str, user_id: uuid.UUID) -> int:
    """Remove the conversations the POST runs made, so every run sees the same data."""
    conn = await asyncpg.connect(url)
    try:
        status = await conn.execute(
            "DELETE FROM conversations WHERE user_id = $1 AND title = $2", user_id, BENCH_TITLE
        )
        await recount(conn, user_id)
        await conn.execute("VACUUM ANALYZE conversations")
    finally:
        await conn.close()
    return int(status.split()[-1])


# --- server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hypercorn_config(tmp: Path) -> Path:
    """The repository's hypercorn.toml without its access log (logging costs server time)."""
    lines = (ROOT / "hypercorn.toml").read_text().splitlines()
    kept = [line for line in lines if not line.strip().startswith("accesslog")]
    path = tmp / "hypercorn.toml"
    path.write_text("\n".join(kept) + "\n")
    assert "accesslog" not in tomllib.loads(path.read_text())
    return path


def server_env(database_url: str, var_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "PARLEY_VAR_DIR": str(var_dir),
        "JWT_SECRET": secrets.token_urlsafe(36),  # 48 characters
        "LOG_LEVEL": "WARNING",
    }


def migrate(env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "chat.cli", "migrate"]
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


@contextmanager
def serving(
    cmd: Sequence[str],
    log: Path,
    *,
    port: int = 0,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[tuple[str, int]]:
    """Start the server `cmd` with `--bind 127.0.0.1:<port>` (a free port unless given), its
    output in `log`; wait until /healthz answers; yield (base URL, pid); stop it on exit, and
    if it failed to start or anything inside failed, show all of its log."""
    port = port or free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--bind", f"127.0.0.1:{port}"],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, proc)
        yield base_url, proc.pid
    except BaseException:
        stop(proc)
        show_log(log, everything=True)
        raise
    stop(proc)


@contextmanager
def running_server(env: dict[str, str], config: Path, port: int, log: Path) -> Iterator[int]:
    """Start `parley serve`, wait until /healthz answers, yield its pid; stop it on exit."""
    cmd = [sys.executable, "-m", "chat.cli", "serve", "--config", str(config)]
    with serving(cmd, log, port=port, env=env) as (_, pid):
        yield pid


def wait_healthy(base_url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HEALTH_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"/healthz did not answer 200 within {HEALTH_DEADLINE_S:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def register_and_login(base_url: str) -> tuple[uuid.UUID, str]:
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        credentials = {"email": EMAIL, "password": PASSWORD}
        registered = client.post("/auth/register", json=credentials)
        registered.raise_for_status()
        login = client.post("/auth/login", json=credentials)
        login.raise_for_status()
    return uuid.UUID(registered.json()["id"]), str(login.json()["access_token"])


def preflight(ctx: Context, targets: Sequence[Target]) -> None:
    """One request per target: wrk only counts status >= 400, so 3xx must be ruled out here."""
    headers = {"Authorization": f"Bearer {ctx.token}"}
    body = {"title": BENCH_TITLE}
    with httpx.Client(base_url=ctx.base_url, headers=headers, timeout=10.0) as client:
        for target in targets:
            json_body = body if target.method == "POST" else None
            response = client.request(target.method, target.path, json=json_body)
            if not 200 <= response.status_code < 300:
                raise RuntimeError(
                    f"{target.name} answered {response.status_code}: {response.text[:300]}"
                )


# --- measuring ----------------------------------------------------------------------------


def write_scripts(tmp: Path, targets: Sequence[Target]) -> dict[str, Path]:
    scripts = {}
    for i, target in enumerate(targets):
        path = tmp / f"target{i}.lua"
        path.write_text(target.lua + DONE_LUA)
        scripts[target.name] = path
    return scripts


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_command(ctx: Context, target: Target, concurrency: int, seconds: int) -> list[str]:
    cmd = [ctx.wrk, "-t", "1", "-c", str(concurrency), "-d", f"{seconds}s", "--latency"]
    cmd += ["-s", str(ctx.scripts[target.name])]
    if target.auth:
        cmd += ["-H", f"Authorization: Bearer {ctx.token}"]
    return [*cmd, ctx.base_url + target.path]


def parse_wrk(stdout: str) -> WrkRun:
    line = next(x for x in stdout.splitlines() if x.startswith(JSON_MARK))
    data = json.loads(line.removeprefix(JSON_MARK))
    return WrkRun(
        requests=data["requests"],
        duration_us=data["duration_us"],
        p50_us=data["p50_us"],
        p99_us=data["p99_us"],
        status_errors=data["status"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
    )


def run_wrk(cmd: list[str]) -> WrkRun:
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return parse_wrk(done.stdout)


def measure(ctx: Context, target: Target, concurrency: int, args: argparse.Namespace) -> Result:
    if args.warmup:
        run_wrk(wrk_command(ctx, target, concurrency, args.warmup))
    server0, wrk0, wall0 = process_cpu_s(ctx.server_pid), children_cpu_s(), time.monotonic()
    run = run_wrk(wrk_command(ctx, target, concurrency, args.duration))
    wall = time.monotonic() - wall0
    server_cpu = (process_cpu_s(ctx.server_pid) - server0) / wall * 100
    wrk_cpu = (children_cpu_s() - wrk0) / wall * 100
    if target.method == "POST":
        asyncio.run(delete_posted(ctx.database_url, ctx.user_id))
    result = Result(concurrency, target.name, run, server_cpu, wrk_cpu)
    print(f"  c={concurrency:<3} {target.name:<48} {run.rps:9.1f} req/s", file=sys.stderr)
    return result


def run_matrix(ctx: Context, targets: Sequence[Target], args: argparse.Namespace) -> list[Result]:
    """Per concurrency: /healthz, every route, /healthz again."""
    health, routes = targets[0], targets[1:]
    results = []
    for concurrency in args.concurrency:
        for target in [health, *routes, health]:
            results.append(measure(ctx, target, concurrency, args))
    return results


# --- report -------------------------------------------------------------------------------


def baselines(results: Sequence[Result], health: str) -> dict[int, float]:
    runs: dict[int, list[float]] = {}
    for r in results:
        if r.target == health:
            runs.setdefault(r.concurrency, []).append(r.run.rps)
    return {c: sum(v) / len(v) for c, v in runs.items()}


def table(results: Sequence[Result], health: str) -> list[str]:
    base = baselines(results, health)
    lines = [
        "| C | route | req/s | p50 ms | p99 ms | × /healthz | server CPU % | wrk CPU % "
        "| non-2xx | socket errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = r.run.rps / base[r.concurrency]
        lines.append(
            f"| {r.concurrency} | `{r.target}` | {r.run.rps:.1f} | {r.run.p50_us / 1000:.2f} "
            f"| {r.run.p99_us / 1000:.2f} | {ratio:.2f} | {r.server_cpu:.0f} | {r.wrk_cpu:.0f} "
            f"| {r.run.status_errors} | {r.run.socket_errors} |"
        )
    return lines


def report(head: list[str], results: Sequence[Result], health: str) -> tuple[str, bool]:
    bad = [r for r in results if r.run.status_errors or r.run.socket_errors]
    lines = [f"## REST benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "", *head, ""]
    lines += table(results, health)
    if bad:
        names = ", ".join(sorted({f"{r.target} (c={r.concurrency})" for r in bad}))
        lines += ["", f"**WARNING: non-2xx responses or socket errors in {names}**"]
    return "\n".join(lines) + "\n", not bad


def targets_for(conversation_id: uuid.UUID) -> list[Target]:
    base = "/api/v1/chat/conversations"
    return [
        Target("GET /healthz", "/healthz", auth=False),
        Target(f"GET {base}", base),
        Target(f"GET {base}/<id>/messages", f"{base}/{conversation_id}/messages"),
        Target(f"POST {base}", base, method="POST", lua=POST_LUA),
    ]


def bench(args: argparse.Namespace, wrk: str, tmp: Path, database_url: str) -> list[Result]:
    env = server_env(database_url, tmp / "var")
    migrate(env)
    port = free_port()
    log = tmp / "server.log"
    with running_server(env, hypercorn_config(tmp), port, log) as pid:
        base_url = f"http://127.0.0.1:{port}"
        user_id, token = register_and_login(base_url)
        ids = asyncio.run(seed(database_url, user_id, args.conversations, args.messages))
        targets = targets_for(ids[0])
        scripts = write_scripts(tmp, targets)
        ctx = Context(wrk, base_url, token, pid, scripts, database_url, user_id)
        preflight(ctx, targets)
        asyncio.run(delete_posted(database_url, user_id))
        results = run_matrix(ctx, targets, args)
    show_log(log, everything=False)
    return results


def show_log(log: Path, *, everything: bool) -> None:
    """The server log's tail on stderr: all of it after a failure, else its non-INFO lines."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    if not everything:
        lines = [line for line in lines if " INFO " not in line and "[INFO]" not in line]
    if lines:
        tail = "\n".join(lines[-60:])
        print(f"--- server log (tail) ---\n{tail}\n--- end ---", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = require_wrk()
    head = machine_lines(wrk)
    head += [
        f"- data: 1 user, {args.conversations} conversations × {args.messages} messages; "
        f"wrk -t 1, {args.duration} s runs after {args.warmup} s warm-up each",
        "- server: `parley serve` (one Hypercorn process, uvloop) on PostgreSQL, "
        "hypercorn.toml without `accesslog` (no access log), LOG_LEVEL=WARNING, "
        "other settings default",
        "- × /healthz: req/s over the mean of the two /healthz runs at the same concurrency; "
        "non-2xx: wrk's status errors (>= 400), 3xx ruled out by one request per route first",
    ]
    with (
        tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp,
        fresh_database(args.pg, args.admin_db) as database_url,
    ):
        results = bench(args, wrk, Path(tmp), database_url)
    text, ok = report(head, results, "GET /healthz")
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

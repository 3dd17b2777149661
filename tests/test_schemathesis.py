"""Schemathesis over `/openapi.json` against a real server: the API keeps its document's promise.

All checks, authenticated as a registered user, a fixed number of examples per operation and a
fixed seed, so a run is repeatable and bounded (about half a minute here). No Hypothesis
database is written: a failure is reproduced from the seed and the printed `curl` lines.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import httpx

from chat import tickets
from storage.database import create_database
from tests import databases
from tests.server import running_server, server_env

EXAMPLES = 20
SEED = 6
# The slowest answer schemathesis accepts: a synchronous message is not paced (issue #6, §5).
MAX_RESPONSE_S = 2
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


async def open_tickets(url: str, user_id: UUID) -> list[str]:
    db = create_database(url)
    await db.connect()
    try:
        ids = []
        for priority in ("low", "urgent"):
            ticket = await tickets.open_ticket(
                db, user_id, None, subject="Refund", description="Where is it?", priority=priority
            )
            await tickets.comment_on_ticket(db, user_id, ticket["id"], body="Hi", author="user")
            ids.append(ticket["id"])
        return ids
    finally:
        await db.disconnect()


def config_file(folder: Path, ticket_ids: list[str]) -> Path:
    """Half of the generated ticket ids are real ones (schemathesis cannot open tickets, so it
    would otherwise only ever see 404s on the detail route); the other half stay random."""
    path = folder / "schemathesis.toml"
    values = ", ".join(f'"{i}"' for i in ticket_ids)
    path.write_text(
        f"[dictionaries.tickets]\nvalues = [{values}]\n\n"
        '[parameters]\n"path.ticket_id" = { dictionary = "tickets", probability = 0.5 }\n'
    )
    return path


def test_the_api_keeps_its_openapi_promise(tmp_path: Path, postgres_url: str) -> None:
    databases.truncate_postgres(postgres_url)
    env = server_env(tmp_path, database_url=postgres_url, assistant_token_delay_ms="1")
    with (
        running_server(env, tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        user = {"email": "schemathesis@example.com", "password": "correct horse"}
        assert http.post("/auth/register", json=user).status_code == 201
        token = http.post("/auth/login", json=user).json()["access_token"]
        # Tickets are opened by the assistant, not over REST: a few for this user, so the
        # ticket routes answer with data rather than only 404s.
        me = http.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
        ticket_ids = databases.in_thread(
            lambda: asyncio.run(open_tickets(postgres_url, UUID(me["id"])))
        )
        # The first GET /api/v1/tools starts the MCP servers and waits for them (docs/tools.md):
        # a process start, not a response time to hold to MAX_RESPONSE_S. Start them first.
        tools = http.get("/api/v1/tools", headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert tools.status_code == 200, tools.text
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "--config-file",
                str(config_file(tmp_path, ticket_ids)),
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "all",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                str(SEED),
                "--generation-database",
                "none",
                "--max-response-time",
                str(MAX_RESPONSE_S),
                "--request-timeout",
                "10",
                # Route 8 subscribes to a conversation: its answer never ends by design, while
                # schemathesis reads each answer whole, so every call would end only at the
                # client's timeout. Its events share route 7's documented (and checked) schema,
                # and tests/test_api_contract.py and tests/test_sse.py check its answers.
                "--exclude-path-regex",
                "/events$",
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    report = run.stdout[-20_000:] + run.stderr[-5_000:]
    assert run.returncode == 0, f"{report}\n--- server log ---\n{server.log_text()[-5_000:]}"
    assert "No issues found" in run.stdout, report

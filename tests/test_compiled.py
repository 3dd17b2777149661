"""Guard rails for `storage/compiled.py`, which reads private parts of SQLAlchemy's compiler.

Every `Statement` in `storage/` runs twice on each backend, once compiled by us and once
through `databases` (which compiles it the public way), and the two must give the same rows.
"""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from databases import Database
from sqlalchemy.sql import ClauseElement, visitors

import storage
from storage.compiled import Statement
from storage.conversations import insert_conversation
from storage.errors import UnsupportedDialect
from storage.messages import insert_message
from storage.rows import Conversation, Message, User, as_uuid
from storage.tables import conversations, messages, users
from storage.users import insert_user

pytestmark = pytest.mark.anyio


def test_sqlalchemy_is_the_pinned_minor_version() -> None:
    assert sa.__version__.startswith("2.1."), (
        f"SQLAlchemy {sa.__version__} is installed, but storage/compiled.py uses private parts "
        "of the 2.1 compiler (_bind_processors, positiontup): check it against the new version "
        "(tests/test_compiled.py) before moving the pin in pyproject.toml"
    )


def test_an_unknown_dialect_is_refused_by_name() -> None:
    statement = Statement(sa.select(users.c.id).where(users.c.id == sa.bindparam("user_id")))
    with pytest.raises(UnsupportedDialect, match=r"'mysql'.*postgresql, sqlite"):
        statement.sql("mysql")
    assert "users" in statement.sql("sqlite")


def storage_statements() -> dict[str, Statement]:
    """Every module-level `Statement` of the `storage` package, by `module.name`."""
    found = {}
    for info in pkgutil.iter_modules(storage.__path__):
        module = importlib.import_module(f"storage.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, Statement):
                found[f"{info.name}.{name}"] = value
    return found


@dataclass(frozen=True)
class State:
    """What the statements run against: a user with one conversation of two messages."""

    user: User
    conversation: Conversation
    question: Message
    answer: Message


Values = Callable[[State], dict[str, Any]]
# Rows come from our driver mappings and from `databases` records alike.
Read = Callable[[Any], Any]


@dataclass(frozen=True)
class Case:
    values: Values
    read: Read
    # For writes: a query whose rows show the effect, read with `after_read`.
    after: Callable[[State], sa.Select[Any]] | None = None
    after_read: Read | None = None
    # Statements only one backend runs (PostgreSQL's single-statement writes).
    dialects: frozenset[str] = frozenset({"sqlite", "postgresql"})


def new_conversation_values(state: State) -> dict[str, Any]:
    conversation = Conversation.new(
        user_id=state.user.id, title="second", title_set_by_user=True, retention_days=7
    )
    return asdict(conversation)


def new_message_values(state: State, seq: int) -> dict[str, Any]:
    message = replace(
        state.answer,
        id=uuid.UUID(int=7),
        seq=seq,
        content="third",
        idempotency_key="third",
        created_at=state.answer.created_at + timedelta(seconds=1),
        error_code="upstream_truncated",
        error_detail="cut",
    )
    return asdict(message) | {"user_id": state.user.id, "tokens_used": 5}


def conversation_by_id(state: State) -> sa.Select[Any]:
    return conversations.select().where(conversations.c.user_id == state.user.id)


def message_by_id(state: State) -> sa.Select[Any]:
    return messages.select().where(messages.c.id == uuid.UUID(int=7))


def total_conversations(state: State) -> sa.Select[Any]:
    return sa.select(users.c.total_conversations).where(users.c.id == state.user.id)


def total_messages(state: State) -> sa.Select[Any]:
    return sa.select(conversations.c.total_messages, conversations.c.total_tokens_used)


def plain(row: Any) -> tuple[Any, ...]:
    return tuple(row.values())


def message_page_row(row: Any) -> tuple[Any, Message | None]:
    return row["total"], None if row["id"] is None else Message.from_row(row)


POSTGRESQL = frozenset({"postgresql"})
CASES: dict[str, Case] = {
    "users._select_user": Case(lambda s: {"user_id": s.user.id}, User.from_row),
    "conversations._select_one": Case(
        lambda s: {"user_id": s.user.id, "conversation_id": s.conversation.id},
        Conversation.from_row,
    ),
    "conversations._select_page": Case(
        lambda s: {"user_id": s.user.id, "offset": 0, "limit": 10},
        lambda row: (Conversation.from_row(row), row["total"]),
    ),
    "conversations._insert_conversation": Case(
        new_conversation_values, plain, conversation_by_id, Conversation.from_row
    ),
    "conversations._count_change": Case(
        lambda s: {"user_id": s.user.id, "change": 1}, plain, total_conversations, plain
    ),
    "conversations._insert_counted": Case(
        new_conversation_values,
        lambda row: as_uuid(row["id"]),
        conversation_by_id,
        Conversation.from_row,
        POSTGRESQL,
    ),
    "messages._bump": Case(
        lambda s: {
            "user_id": s.user.id,
            "conversation_id": s.conversation.id,
            "tokens_used": 5,
            "created_at": s.answer.created_at + timedelta(seconds=1),
        },
        plain,
        total_messages,
        plain,
    ),
    "messages._insert": Case(
        lambda s: new_message_values(s, 3), plain, message_by_id, Message.from_row
    ),
    "messages._insert_counted": Case(
        lambda s: new_message_values(s, 0),
        plain,
        message_by_id,
        Message.from_row,
        POSTGRESQL,
    ),
    "messages._select_recent": Case(
        lambda s: {"user_id": s.user.id, "conversation_id": s.conversation.id, "limit": 1},
        Message.from_row,
    ),
    "fences._raise": Case(
        lambda s: {"conversation_id": s.conversation.id, "fence": 7},
        plain,
        lambda s: sa.select(conversations.c.fence),
        plain,
    ),
    "messages._select_page": Case(
        lambda s: {
            "user_id": s.user.id,
            "conversation_id": s.conversation.id,
            "offset": 0,
            "upto": 10,
        },
        message_page_row,
    ),
}


def with_values(statement: ClauseElement, values: dict[str, Any]) -> ClauseElement:
    """The statement with its bound parameters set, for `databases` to compile and run.

    `params()` does this for SELECT only; this is its traversal, which also reaches the
    binds of INSERT, UPDATE and their CTEs.
    """

    def visit(bind: sa.BindParameter[Any]) -> None:
        if bind.key in values:
            bind.value = values[bind.key]
            bind.required = False

    return visitors.cloned_traverse(statement, {"maintain_key": True}, {"bindparam": visit})


def test_every_statement_has_a_case() -> None:
    assert set(storage_statements()) == set(CASES), "add a case to CASES for each new Statement"


async def make_state(db: Database) -> State:
    user = await insert_user(db, email="c@example.com", password_hash="x", display_name="C")
    conversation = await insert_conversation(
        db, user_id=user.id, title="first", title_set_by_user=False, retention_days=30
    )
    question, _ = await insert_message(
        db, user_id=user.id, conversation_id=conversation.id, role="user", content="q"
    )
    answer, _ = await insert_message(
        db,
        user_id=user.id,
        conversation_id=conversation.id,
        role="assistant",
        content="a",
        status="failed",
        model_used="m",
        confidence_score=0.5,
        entity_references=[{"type": "article", "id": "x", "label": "X"}],
        prompt_tokens=3,
        completion_tokens=4,
        error_code="upstream_unreachable",
        error_detail="could not connect",
    )
    return State(user, conversation, question, answer)


async def outcome(
    db: Database, case: Case, state: State, run: Callable[[], Any]
) -> tuple[list[str], list[Any], list[Any]]:
    """The statement's column names, rows and after-rows, with every write rolled back."""
    async with db.transaction(force_rollback=True):
        rows = await run()
        after = [] if case.after is None else await db.fetch_all(case.after(state))
    read_after = case.after_read or plain
    return (
        list(rows[0].keys()) if rows else [],
        [case.read(row) for row in rows],
        [read_after(row) for row in after],
    )


@pytest.mark.parametrize("name", sorted(CASES))
async def test_a_statement_gives_the_rows_databases_gives(db: Database, name: str) -> None:
    case = CASES[name]
    if db.url.dialect not in case.dialects:
        pytest.skip(f"{name} runs on {', '.join(sorted(case.dialects))} only")
    statement = storage_statements()[name]
    state = await make_state(db)
    values = case.values(state)

    query = with_values(statement.statement, values)

    async def through_databases() -> list[Any]:
        # `databases` cannot fetch from a write without RETURNING on SQLite: no description.
        if isinstance(query, sa.sql.expression.ReturnsRows) and query.exported_columns:
            return await db.fetch_all(query)
        await db.execute(query)
        return []

    ours = await outcome(db, case, state, lambda: statement.fetch_all(db, **values))
    reference = await outcome(db, case, state, through_databases)
    assert ours == reference
    # Not vacuous: a read finds rows, a write changes what its after-query sees.
    assert ours[1] or ours[2]

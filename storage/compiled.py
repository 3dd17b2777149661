"""Hot statements compiled once per dialect and run on the driver's own connection.

`databases` compiles every SQLAlchemy statement on every call and wraps each row in a
processing record; on the routes every request takes, that was most of our time per request
(see docs/benchmarks.md). A `Statement` keeps the compiled SQL and the bind processors, and
returns the driver's rows as plain mappings, which `storage.rows` normalises as it does for
`databases` rows. Connections still come from the one `databases.Database`, so pooling,
transactions and the per-task connection are unchanged.

It reads private parts of SQLAlchemy's compiler (`_bind_processors`, `positiontup`), so
SQLAlchemy is pinned to one minor version (pyproject.toml); tests/test_compiled.py checks the
pin and compares every statement's rows with the same query run through `databases`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from databases import Database
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from storage.errors import UnsupportedDialect

Row = Mapping[str, Any]

_DIALECTS: dict[str, Dialect] = {
    "postgresql": asyncpg_dialect(),  # type: ignore[no-untyped-call]
    "sqlite": aiosqlite_dialect(),
}


@dataclass(frozen=True, slots=True)
class _Form:
    sql: str
    names: tuple[str, ...]
    processors: Mapping[str, Callable[[Any], Any]]
    defaults: dict[str, Any]

    def arguments(self, values: dict[str, Any]) -> list[Any]:
        merged = {**self.defaults, **values}
        args = []
        for name in self.names:
            value = merged[name]
            processor = self.processors.get(name)
            args.append(value if processor is None or value is None else processor(value))
        return args


class Statement:
    """A statement with named `bindparam`s, compiled on first use for each backend."""

    def __init__(self, statement: ClauseElement) -> None:
        self._statement = statement
        self._forms: dict[str, _Form] = {}

    def _form(self, dialect_name: str) -> _Form:
        form = self._forms.get(dialect_name)
        if form is None:
            dialect = _DIALECTS.get(dialect_name)
            if dialect is None:
                raise UnsupportedDialect(
                    f"no compiled statements for {dialect_name!r}; "
                    f"supported: {', '.join(sorted(_DIALECTS))}"
                )
            compiled = self._statement.compile(dialect=dialect)
            assert isinstance(compiled, SQLCompiler)
            names = tuple(compiled.positiontup or ())
            defaults = {
                name: bind.value
                for name, bind in compiled.binds.items()
                if not bind.required and bind.callable is None
            }
            # Tuple-valued processors only occur for expanding IN lists, which we do not use.
            processors = {k: v for k, v in compiled._bind_processors.items() if callable(v)}
            form = _Form(compiled.string, names, processors, defaults)
            self._forms[dialect_name] = form
        return form

    @property
    def statement(self) -> ClauseElement:
        """The SQLAlchemy statement this was built from."""
        return self._statement

    def sql(self, dialect_name: str) -> str:
        """The SQL sent for a backend; `UnsupportedDialect` for one we do not compile for."""
        return self._form(dialect_name).sql

    async def fetch_all(self, db: Database, **values: Any) -> Sequence[Row]:
        dialect_name = db.url.dialect
        form = self._form(dialect_name)
        args = form.arguments(values)
        async with db.connection() as connection:
            raw = connection.raw_connection
            if dialect_name == "postgresql":
                rows: Sequence[Row] = await raw.fetch(form.sql, *args)
                return rows
            async with raw.execute(form.sql, args) as cursor:
                names = [d[0] for d in cursor.description or ()]
                return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def fetch_one(self, db: Database, **values: Any) -> Row | None:
        rows = await self.fetch_all(db, **values)
        return rows[0] if rows else None

    async def fetch_value(self, db: Database, **values: Any) -> Any:
        """The first column of the first row, or `None` without rows."""
        row = await self.fetch_one(db, **values)
        return None if row is None else next(iter(row.values()))

    async def execute(self, db: Database, **values: Any) -> None:
        """Run a statement that returns no rows."""
        await self.fetch_all(db, **values)

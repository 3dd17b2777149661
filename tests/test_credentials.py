"""Credential primitives, apart from any request."""

from __future__ import annotations

import os

import anyio
import anyio.to_thread
import pytest

from chat.credentials import Passwords

pytestmark = pytest.mark.anyio


async def test_password_hashing_runs_on_its_own_cpu_sized_limiter() -> None:
    passwords = Passwords(time_cost=1, memory_kib=64)
    # Not anyio's shared 40 threads: a burst of sign-ins takes at most one thread per CPU
    # (and its hash memory), and leaves the default limiter to everything else.
    assert passwords.limiter is not anyio.to_thread.current_default_thread_limiter()
    assert passwords.limiter.total_tokens == (os.cpu_count() or 1)
    peak = 0

    async def sign_in() -> None:
        nonlocal peak
        hashed = await passwords.hash("correct horse")
        peak = max(peak, passwords.limiter.borrowed_tokens)
        assert await passwords.verify(hashed, "correct horse")

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(4 * (os.cpu_count() or 1)):
                tg.start_soon(sign_in)
    assert 1 <= peak <= passwords.limiter.total_tokens

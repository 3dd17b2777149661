"""The Hypercorn fix is still needed and still fits the code it replaces."""

from __future__ import annotations

from chat import hypercorn_fixes


def test_the_replaced_ping_loop_is_the_one_the_fix_was_written_for() -> None:
    # Fails after a Hypercorn upgrade that changes the loop: check whether the upgrade fixed
    # the lingering pings (then delete chat/hypercorn_fixes.py) or adapt the fix.
    assert hypercorn_fixes.original_is_known()

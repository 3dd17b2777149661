"""Alembic's scripts folder, a package so that the wheel ships it and `parley migrate` finds it."""

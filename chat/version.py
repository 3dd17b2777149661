"""The installed package's version: one number for `parley --version` and `/openapi.json`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The version pip installed (pyproject.toml's), or `0+unknown` when run uninstalled."""
    try:
        return version("parley")
    except PackageNotFoundError:
        return "0+unknown"

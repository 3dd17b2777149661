"""Settings come from the environment and are checked before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chat.settings import SettingsError, load_settings


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({"PARLEY_VAR_DIR": str(tmp_path)})
    assert settings.parley_env == "development"
    assert settings.database == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'parley.db'}"
    assert settings.assistant_provider == "local"
    assert settings.redis_url == ""


def test_dev_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    first = load_settings({"PARLEY_VAR_DIR": str(tmp_path)})
    second = load_settings({"PARLEY_VAR_DIR": str(tmp_path)})
    assert len(first.jwt_secret) >= 32
    assert first.jwt_secret == second.jwt_secret
    assert (tmp_path / "jwt_secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PARLEY_ENV": "production"}, "invalid setting JWT_SECRET"),
        ({"PARLEY_ENV": "production", "JWT_SECRET": "short"}, "at least 32 characters"),
        ({"PARLEY_ENV": "staging"}, "invalid setting PARLEY_ENV"),
        ({"ACTOR_IDLE_S": "soon"}, "invalid setting ACTOR_IDLE_S"),
        ({"ASSISTANT_PROVIDER": "magic"}, "invalid setting ASSISTANT_PROVIDER"),
        ({"REGISTRATION_ENABLED": "maybe"}, "invalid setting REGISTRATION_ENABLED"),
        ({"DATABASE_POOL_SIZE": "0"}, "invalid setting DATABASE_POOL_SIZE"),
    ],
)
def test_bad_values_fail_in_one_line(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"PARLEY_VAR_DIR": str(tmp_path), **environ})
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_production_accepts_a_strong_secret(tmp_path: Path) -> None:
    settings = load_settings(
        {"PARLEY_VAR_DIR": str(tmp_path), "PARLEY_ENV": "production", "JWT_SECRET": "s" * 40}
    )
    assert settings.jwt_secret == "s" * 40
    assert not (tmp_path / "jwt_secret").exists()


def test_cli_refuses_to_start_with_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chat.cli", "serve"],
        env={"PARLEY_ENV": "production", "PARLEY_VAR_DIR": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid setting JWT_SECRET: JWT_SECRET is required when PARLEY_ENV=production"
    ]


def test_every_setting_is_in_the_readme_table() -> None:
    from chat.settings import Settings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [n.upper() for n in Settings.model_fields if f"| `{n.upper()}` |" not in readme]
    assert missing == []

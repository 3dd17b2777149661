"""docker-compose.yml agrees with the code, the README and the load balancer's config.

These machines have no Docker engine, so compose cannot run here: the file is parsed and held
against what it names instead (tests/test_load_balancer.py runs its nginx config for real).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from chat.root import shutdown_budget_s
from chat.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"postgres", "redis", "migrate", "app1", "app2", "lb"}
APPS = ("app1", "app2")
# What `docker compose up` is given: the one variable compose refuses to start without.
SHELL = {"JWT_SECRET": "x" * 32}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, and $$ for a $.
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, shell: Mapping[str, str]) -> Any:
    """`value` with compose's variable substitution applied to every string in it."""
    if isinstance(value, dict):
        return {key: interpolate(item, shell) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, shell) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        found = shell.get(name)
        missing = found is None or (op is not None and op.startswith(":") and found == "")
        if op is not None and op.endswith("?") and missing:
            raise MissingVariable(arg)
        if op is not None and op.endswith("-") and missing:
            return str(arg)
        return found or ""

    return VARIABLE.sub(one, value)


def compose(shell: Mapping[str, str] = SHELL) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    services: dict[str, Any] = interpolate(loaded, shell)["services"]
    return services


def seconds(duration: str) -> float:
    """A compose duration such as `20s`, `1m30s` or `1500ms`."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?", duration)
    assert parts and duration, f"not a compose duration: {duration!r}"
    h, m, s, ms = (int(part or 0) for part in parts.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def documented_settings() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))


def test_the_production_services_are_all_there() -> None:
    services = compose()
    assert set(services) == SERVICES
    assert services["migrate"]["command"] == ["parley", "migrate"]
    for app in APPS:
        after = services[app]["depends_on"]
        assert after["migrate"]["condition"] == "service_completed_successfully"
        assert after["redis"]["condition"] == "service_healthy"
        assert services[app]["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert set(services["lb"]["depends_on"]) == set(APPS)


def test_compose_refuses_to_start_without_a_jwt_secret() -> None:
    with pytest.raises(MissingVariable, match="JWT_SECRET"):
        compose({})


def test_every_setting_given_to_the_apps_is_in_the_readme_table() -> None:
    documented = documented_settings()
    assert "SHUTDOWN_GRACE_S" in documented  # the table was found
    for service in (*APPS, "migrate"):
        names = set(compose()[service]["environment"])
        assert names <= documented, f"{service}: {sorted(names - documented)} not in README"


def test_every_long_running_service_has_a_healthcheck() -> None:
    services = compose()
    for name in SERVICES - {"migrate"}:  # migrate runs once and exits
        check = services[name].get("healthcheck", {}).get("test")
        assert check and check[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_only_the_load_balancer_publishes_a_port() -> None:
    services = compose()
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"lb"}
    [port] = services["lb"]["ports"]
    assert port.endswith(":" + services["lb"]["environment"]["LISTEN"])


def test_the_apps_stop_grace_period_covers_the_whole_shutdown() -> None:
    graceful = tomllib.loads((ROOT / "hypercorn.toml").read_text())["graceful_timeout"]
    for app in APPS:
        service = compose()[app]
        settings = load_settings(service["environment"] | {"PARLEY_VAR_DIR": "unused"})
        budget = shutdown_budget_s(settings)
        grace = seconds(service["stop_grace_period"])
        # Replies stored and the Redis flush (both in the budget), Hypercorn's wait, the
        # pool's 2 s close: all before Docker's SIGKILL.
        assert settings.redis_url and budget >= 10 + 3 + settings.redis_timeout_s
        assert budget < graceful < grace
        assert budget + 2 < grace


def test_the_load_balancer_runs_the_config_in_the_repository() -> None:
    lb = compose()["lb"]
    [mount] = lb["volumes"]
    source, target, *_ = mount.split(":")
    template = ROOT / source
    assert template.is_file() and template.resolve().is_relative_to(ROOT)
    text = template.read_text()
    placeholders = set(re.findall(r"\$\{([A-Z0-9_]+)\}", text))
    assert placeholders == {"APP1", "APP2", "LISTEN"}
    # envsubst is told exactly these names, so nginx's own $variables are left alone; and
    # compose gives each of them a value.
    command = " ".join(lb["command"])
    assert f"< {target} >" in command
    named = set(re.findall(r"\$(\w+)", re.search(r"envsubst '([^']*)'", command)[1]))  # type: ignore[index]
    assert named == placeholders <= set(lb["environment"])
    assert "daemon off;" in command
    # The upstreams are the apps on the port their image binds.
    dockerfile = (ROOT / "Dockerfile").read_text()
    for app, key in zip(APPS, ("APP1", "APP2"), strict=True):
        host, port = lb["environment"][key].split(":")
        assert host == app and f"0.0.0.0:{port}" in dockerfile


def test_the_load_balancer_keeps_streams_open_and_unbuffered() -> None:
    template = (ROOT / "deploy" / "nginx.conf.template").read_text()
    text = re.sub(r"#.*", "", template)  # directives only
    assert "proxy_buffering off;" in text
    # Round-robin: no hashing or stickiness of any kind picks the instance.
    assert not re.search(r"\b(ip_hash|hash|sticky|least_conn|random)\b", text)
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    read_timeout = re.search(r"proxy_read_timeout (\w+);", text)
    assert read_timeout
    hypercorn = tomllib.loads((ROOT / "hypercorn.toml").read_text())
    settings = load_settings(compose()["app1"]["environment"] | {"PARLEY_VAR_DIR": "unused"})
    # A quiet stream sends a keep-alive, a quiet socket a ping, well within nginx's timeout.
    quiet = max(settings.sse_keepalive_s, hypercorn["websocket_ping_interval"])
    assert seconds(read_timeout[1]) >= 2 * quiet

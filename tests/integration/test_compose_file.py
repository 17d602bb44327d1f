"""docker-compose.yml is safe by default: Redis runs with a password that has no default, every
process reaches it with that password in DEX_REDIS_URL, and the admin token has no (empty)
default either. The YAML is read as compose reads it; the Redis command and healthcheck are run
on a local redis-server; `docker compose config` is run when the machine has it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROCESSES = {"gateway", "matcher", "settler", "beat", "broadcaster"}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error} (not $${...}: escaped)
REFERENCE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def load() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def references(text: str, name: str) -> list[str]:
    """The operator (``:?``, ``:-`` ...) of every ``${name...}`` in ``text`` ("" when bare)."""
    return [op or "" for found, op, _ in REFERENCE.findall(text) if found == name]


def unescape(text: str) -> str:
    """What the container sees of a compose string without variables: ``$$`` is ``$``."""
    return text.replace("$$", "$")


def test_the_secrets_have_no_default_and_no_empty_value() -> None:
    text = COMPOSE_FILE.read_text()
    for name in ("DEX_REDIS_PASSWORD", "DEX_ADMIN_TOKEN"):
        found = references(text, name)
        assert found, f"{name} is not used"
        # `:?` refuses both unset and empty; `-`, `:-` or a bare reference would start without it.
        assert set(found) == {":?"}, f"{name}: {found}"


def test_every_process_reaches_redis_with_the_password() -> None:
    services = load()["services"]
    assert set(services) >= PROCESSES
    for name in PROCESSES:
        env = services[name]["environment"]
        url = env["DEX_REDIS_URL"]
        assert url.startswith("redis://:${DEX_REDIS_PASSWORD:?"), name
        assert url.endswith("}@redis:6379/0"), name
        # The admin token goes to the one process that checks it.
        assert ("DEX_ADMIN_TOKEN" in env) == (name == "gateway"), name
    assert references(services["gateway"]["environment"]["DEX_ADMIN_TOKEN"], "DEX_ADMIN_TOKEN") == [
        ":?"
    ]


def test_redis_runs_with_requirepass_from_the_environment() -> None:
    redis = load()["services"]["redis"]
    assert references(redis["environment"]["REDISCLI_AUTH"], "DEX_REDIS_PASSWORD") == [":?"]
    command = redis["command"]
    assert command[:2] == ["sh", "-c"]
    assert 'exec redis-server --requirepass "$$REDISCLI_AUTH"' in command[2]
    assert " ".join(command).count("--requirepass") == 1  # never on the command line itself
    assert redis["healthcheck"]["test"] == ["CMD-SHELL", '[ "$$(redis-cli ping)" = PONG ]']


def test_the_redis_command_and_healthcheck_work_on_a_real_redis(tmp_path: Path) -> None:
    from support.redis_auth import check_password_redis

    redis = load()["services"]["redis"]
    check_password_redis(
        ["sh", "-c", unescape(redis["command"][2]), "redis-server"],
        ["sh", "-c", unescape(redis["healthcheck"]["test"][1])],
        tmp_path,
        empty_refusal="DEX_REDIS_PASSWORD is empty",
    )


def docker_compose() -> list[str]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("docker compose is not installed")
    return [docker, "compose", "-f", str(COMPOSE_FILE), "--project-directory", str(REPO_ROOT)]


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    compose = docker_compose()
    base = {
        k: v for k, v in os.environ.items() if k not in ("DEX_REDIS_PASSWORD", "DEX_ADMIN_TOKEN")
    }
    # An empty .env in place of the checkout's, if any: only the environment given here counts.
    env_file = tmp_path / ".env"
    env_file.write_text("")
    config = [*compose, "--env-file", str(env_file), "config", "--format", "json"]
    for given in (
        {},
        {"DEX_REDIS_PASSWORD": "p"},
        {"DEX_ADMIN_TOKEN": "t"},
        {"DEX_REDIS_PASSWORD": "", "DEX_ADMIN_TOKEN": "t"},
        {"DEX_REDIS_PASSWORD": "p", "DEX_ADMIN_TOKEN": ""},
    ):
        result = subprocess.run(
            config, env={**base, **given}, capture_output=True, text=True, timeout=60
        )
        assert result.returncode != 0 and "set DEX_" in result.stderr, given
    env = {**base, "DEX_REDIS_PASSWORD": "pw123", "DEX_ADMIN_TOKEN": "tok456"}
    result = subprocess.run(config, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in PROCESSES:
        assert services[name]["environment"]["DEX_REDIS_URL"] == "redis://:pw123@redis:6379/0"
    assert services["gateway"]["environment"]["DEX_ADMIN_TOKEN"] == "tok456"
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == "pw123"


def test_the_bridge_runs_only_in_the_chain_profile_with_the_redis_password() -> None:
    """The sixth process needs a chain: `docker compose --profile chain up` starts it; its key
    has no default (the bridge refuses to start without one)."""
    bridge = load()["services"]["bridge"]
    assert bridge["profiles"] == ["chain"]
    assert bridge["command"] == ["bridge"]
    env = bridge["environment"]
    assert env["DEX_REDIS_URL"].startswith("redis://:${DEX_REDIS_PASSWORD:?")
    assert env["DEX_BRIDGE_KEY"] == "${DEX_BRIDGE_KEY:-}"
    assert "DEX_ADMIN_TOKEN" not in env
    assert "DEX_CHAIN_RPC_URL" in env and "DEX_VERIFYING_CONTRACT" in env

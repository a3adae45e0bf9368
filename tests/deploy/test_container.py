"""The container files, checked without a Docker daemon (none runs here): the
Dockerfile linted by hadolint, its health check run against a real server, and
compose.yaml validated against the Compose schema (tests/deploy/README.md)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.conftest import ServerThread
from tests.redis_process import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
HADOLINT = Path(sys.executable).parent / "hadolint"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def instruction(name: str) -> list[str]:
    """The arguments of every `name` instruction, continuation lines joined."""
    joined = DOCKERFILE.replace("\\\n", " ")
    return re.findall(rf"^{name}\s+(.*)$", joined, flags=re.MULTILINE)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    done = subprocess.run(
        [str(HADOLINT), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_as_an_unprivileged_user() -> None:
    [user] = instruction("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    assert DOCKERFILE.index("USER") > DOCKERFILE.index("RUN pip install")
    assert DOCKERFILE.index("USER") < DOCKERFILE.index("CMD [")


def healthcheck_command() -> list[str]:
    [check] = instruction("HEALTHCHECK")
    command: list[str] = json.loads(check.partition("CMD")[2])
    return command


def test_the_health_check_passes_on_a_ready_server_and_fails_without_one(
    server: ServerThread,
) -> None:
    command = healthcheck_command()
    assert "/readyz" in command[-1]
    ready = [*command[:-1], command[-1].replace(":8000/", f":{server.port}/")]
    down = [*command[:-1], command[-1].replace(":8000/", f":{free_port()}/")]
    ready[0] = down[0] = sys.executable  # the image's python

    assert subprocess.run(ready, capture_output=True, check=False).returncode == 0
    assert subprocess.run(down, capture_output=True, check=False).returncode != 0


def test_compose_yaml_is_a_valid_compose_file() -> None:
    schema = json.loads((ROOT / "tests" / "deploy" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose())


def test_compose_runs_the_server_over_a_real_redis() -> None:
    services = compose()["services"]
    assert services["redis"]["image"].startswith("redis:7")
    server = services["server"]
    assert server["environment"]["GIFTING_REDIS_URL"] == "redis://redis:6379/0"
    assert "profiles" not in server and "profiles" not in services["redis"]


def test_the_cluster_profile_has_three_masters_a_one_shot_create_and_two_workers() -> None:
    services = compose()["services"]
    in_profile = {name for name, s in services.items() if "cluster" in s.get("profiles", ())}
    nodes = sorted(n for n in in_profile if n.startswith("redis-node-"))
    workers = sorted(n for n in in_profile if n.startswith("worker-"))
    assert len(nodes) == 3 and len(workers) == 2
    for node in nodes:
        assert "--cluster-enabled yes" in " ".join(services[node]["command"])
    create = " ".join(services["cluster-create"]["command"])
    assert "redis-cli --cluster create" in create and "--cluster-replicas 0" in create
    assert create.count(":6379") == 3
    for worker in workers:
        assert services[worker]["environment"]["GIFTING_REDIS_URL"].startswith("redis://redis-node")
        needs = services[worker]["depends_on"]["cluster-create"]
        assert needs["condition"] == "service_completed_successfully"

"""The compose file and images, checked without a Docker engine: services, references, GPUs."""

import re
from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _workers(compose: dict) -> dict:
    return {name: s for name, s in compose["services"].items() if name.startswith("worker-gpu")}


def test_services_are_all_there():
    services = _compose()["services"]
    assert {"redis", "postgres", "migrate", "worker-gpu0", "worker-gpu1", "cli"} <= set(services)


def test_redis_keeps_an_append_only_file_on_a_volume():
    compose = _compose()
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose["volumes"]
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])


def test_postgres_has_a_healthcheck_and_the_migration_waits_for_it():
    services = _compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_one_worker_per_gpu_each_pinned_by_device_ids():
    compose = _compose()
    workers = _workers(compose)
    seen = []
    for name, service in workers.items():
        [device] = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        [gpu] = device["device_ids"]
        assert name == f"worker-gpu{gpu}" and service["environment"]["FARM_GPU_INDEX"] == gpu
        assert service["command"] == ["--gpu", "0"]  # the container sees its one GPU as 0
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        seen.append(gpu)
    assert len(seen) == len(set(seen)) >= 2


def test_every_reference_resolves():
    compose = _compose()
    services, volumes = compose["services"], compose["volumes"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith(("/", ".", "$")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"
        if "build" in service:
            dockerfile = DOCKER.parent / service["build"]["context"].replace("..", ".") / service["build"]["dockerfile"]
            assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve().is_file(), dockerfile
        env = service.get("environment", {})
        if "FARM_BROKER_URL" in env:
            host = re.match(r"redis://([^:/]+)", env["FARM_BROKER_URL"]).group(1)
            assert host in services
            db_host = re.search(r"@([^:/]+)", env["FARM_DB_URL"]).group(1)
            assert db_host in services
    images = {s.get("image") for s in services.values() if "build" in s}
    assert all(s["image"] in images for s in services.values() if s.get("image", "").startswith("farm-"))


def test_worker_image_is_cuda_devel_with_pycuda():
    text = (DOCKER / "worker.Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:") and "devel" in base
    assert '".[gpu]"' in text and "import pycuda" in text
    assert re.search(r'ENTRYPOINT \["farm", "worker"\]', text)
    cli = (DOCKER / "cli.Dockerfile").read_text()
    assert "whl/cpu" in cli and re.search(r'ENTRYPOINT \["farm"\]', cli)


def test_example_sweep_file_is_valid():
    from farm.scheduler import sweep

    plan = sweep.load(DOCKER / "sweeps" / "grid.yaml")
    assert len(plan.specs) == 5 * (1 + 2 + 2)

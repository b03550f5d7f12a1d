"""The Dockerfile and the shell scripts pass their linters, and the container entry point
does what docs/deploy.md says (run here with recording stand-ins for the commands it starts)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name) or pytest.fail(f"{name} is not installed (test extra)")


def test_dockerfile_passes_hadolint():
    result = subprocess.run([tool("hadolint"), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_pass_shellcheck():
    scripts = [str(ENTRYPOINT), *map(str, sorted((ROOT / "scripts").glob("*.sh"))), str(ROOT / ".ci" / "run")]
    result = subprocess.run([tool("shellcheck"), *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_serves_port_8000_behind_a_proxy_with_a_health_check():
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:") and "latest" not in base
    assert re.search(r"^EXPOSE .*\b8000\b", text, re.M)
    assert "ACESTEP_API_PORT=8000" in text and "ACESTEP_API_HOST=0.0.0.0" in text
    assert "ACESTEP_FORWARDED_ALLOW_IPS=*" in text
    health = re.search(r"^HEALTHCHECK .*?(?=^\S)", text, re.M | re.S).group(0)
    assert "/health" in health
    assert '"/app/checkpoints"' in text  # the weights volume
    # Every file the image copies is let through .dockerignore.
    allowed = (ROOT / ".dockerignore").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for name in source.split():
            assert f"!{name.rstrip('/')}" in allowed.replace("/\n", "\n"), name


@pytest.fixture
def recorder(tmp_path):
    """A PATH whose `acestep-api` and `python3` write their arguments to a log and exit 0."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("acestep-api", "python3"):
        script = bin_dir / name
        script.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "{log}"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def run(checkpoints: Path, *args: str, **env: str):
        environ = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "ACESTEP_CHECKPOINT_DIR": str(checkpoints),
            **env,
        }
        result = subprocess.run(["bash", str(ENTRYPOINT), *args], env=environ, capture_output=True, text=True)
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return result, calls

    return run


def test_entrypoint_downloads_missing_weights_then_serves(recorder, tmp_path):
    result, calls = recorder(tmp_path / "ckpt", "--log-level", "info", ACESTEP_EXTRA_MODELS="acestep-v15-base acestep-5Hz-lm-4B")
    assert result.returncode == 0, result.stderr
    assert calls == [
        f"acestep-api download --dir {tmp_path / 'ckpt'} acestep-v15-base acestep-5Hz-lm-4B",
        "acestep-api serve --log-level info",
    ]


def test_entrypoint_serves_present_weights_without_downloading_and_adds_the_ui(recorder, tmp_path):
    primary = tmp_path / "ckpt" / "acestep-v15-turbo"
    primary.mkdir(parents=True)
    (primary / "config.json").write_text("{}")
    result, calls = recorder(tmp_path / "ckpt", ACESTEP_UI="1")
    assert result.returncode == 0, result.stderr
    assert calls == ["acestep-api serve --ui"]


def test_entrypoint_refuses_to_start_without_weights_when_downloads_are_off(recorder, tmp_path):
    result, calls = recorder(tmp_path / "ckpt", ACESTEP_DOWNLOAD_ON_START="0")
    assert result.returncode == 1
    assert "mount the weights there" in result.stderr
    assert calls == []


def test_entrypoint_runs_the_serverless_worker_and_the_demo(recorder, tmp_path):
    result, calls = recorder(tmp_path / "ckpt", ACESTEP_MODE="serverless", ACESTEP_DEMO="1")
    assert result.returncode == 0, result.stderr
    assert calls == ["python3 -m acestep_api.serverless.handler"]
    result, calls = recorder(tmp_path / "ckpt", ACESTEP_DEMO="1")
    assert calls == ["acestep-api serve --demo"]


def test_entrypoint_runs_a_distributed_worker_and_a_replica_that_loads_no_model(recorder, tmp_path):
    database = {"ACESTEP_DATABASE_URL": "postgresql://u:p@db/acestep"}
    # A replica: no weights needed, so nothing is downloaded and --demo does not apply.
    result, calls = recorder(tmp_path / "ckpt", "--port", "8000", ACESTEP_DEMO="1", **database)
    assert result.returncode == 0, result.stderr
    assert calls == ["acestep-api serve --port 8000"]
    result, calls = recorder(tmp_path / "ckpt", ACESTEP_MODE="api", ACESTEP_DOWNLOAD_ON_START="0", **database)
    assert result.returncode == 0, result.stderr
    assert calls == ["acestep-api serve"]
    # A worker loads the models: missing weights are fetched first.
    result, calls = recorder(tmp_path / "ckpt", "--name", "gpu0", ACESTEP_MODE="worker", **database)
    assert result.returncode == 0, result.stderr
    assert calls == [f"acestep-api download --dir {tmp_path / 'ckpt'}", "acestep-api worker --name gpu0"]
    result, calls = recorder(tmp_path / "ckpt", ACESTEP_MODE="worker", ACESTEP_DEMO="1", **database)
    assert calls == ["acestep-api worker --demo"]
    result, calls = recorder(tmp_path / "ckpt", ACESTEP_MODE="migrate", **database)
    assert result.returncode == 0, result.stderr
    assert calls == ["acestep-api db migrate"]


def test_entrypoint_refuses_an_unknown_mode(recorder, tmp_path):
    result, calls = recorder(tmp_path / "ckpt", ACESTEP_MODE="wroker")
    assert result.returncode == 2
    assert "ACESTEP_MODE must be api, worker, migrate or serverless" in result.stderr
    assert calls == []


def test_compose_file_runs_replicas_and_gpu_workers_on_one_database():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "migrate", "api", "worker", "proxy"} <= set(services)
    acestep = {name: services[name] for name in ("migrate", "api", "worker")}
    for name, service in acestep.items():
        env = service["environment"]
        assert env["ACESTEP_DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["ACESTEP_DATABASE_URL"], name
        assert env["ACESTEP_MODE"] == name
        assert "outputs:/app/outputs" in service["volumes"], name  # every node sees every file
    assert services["api"]["deploy"]["replicas"] >= 2
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    [gpu] = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert "checkpoints:/app/checkpoints" in services["worker"]["volumes"]
    assert services["postgres"]["healthcheck"]["test"]
    # The proxy in front spreads requests over the replicas it resolves by the service name.
    assert services["proxy"]["ports"] == ["8000:8000"]
    nginx = (ROOT / "docker" / "nginx.conf").read_text()
    assert re.search(r"server api:8000 resolve;", nginx) and "proxy_buffering off" in nginx
    # Every volume a service mounts is declared.
    mounted = {volume.split(":")[0] for service in services.values() for volume in service.get("volumes", [])}
    assert {name for name in mounted if not name.startswith(".")} <= set(compose["volumes"])

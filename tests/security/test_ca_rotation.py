"""A CA rotation done by the steps of cloud/README.md ("Rotate a certificate", "The CA"), run as written
(their shell blocks, with the scripts copied beside the secrets so that the relative paths hold) on the
shipped broker configuration: certificates of the old and of the new CA both work while the broker trusts
both, and a device removed during the rotation is refused with either CA's certificate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from ..support.cloudbroker import CLOUD, SCRIPTS, connect, shipped_broker_running, tls_refusal

pytestmark = pytest.mark.integration


def rotation_blocks() -> list[str]:
    """The README's shell blocks of the CA rotation, in order (steps 2, 3, 5 and 6)."""
    readme = (CLOUD / "README.md").read_text()
    section = readme[readme.index("- **The CA**"):readme.index("## Keep the CA off the instance")]
    blocks = [textwrap.dedent(block) for block in re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)]
    assert len(blocks) == 4, "the rotation's steps changed: update this test with them"
    return blocks


def run_block(block: str, cwd: Path, **placeholders: str) -> list[str]:
    """Run a README block in cwd (which holds secrets/, secrets-new/ and scripts/) without its `docker
    compose` lines, which are returned for the test to act out."""
    for placeholder, value in placeholders.items():
        block = block.replace(placeholder, value)
    docker = [line.strip() for line in block.splitlines() if line.strip().startswith("docker compose")]
    shell = "\n".join(line for line in block.splitlines() if not line.strip().startswith("docker compose"))
    env = {k: v for k, v in os.environ.items() if k != "FACECAP_SECRETS"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", shell], cwd=cwd, env=env, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, f"{shell}\n{result.stdout}\n{result.stderr}"
    return [re.sub(r"\s*#.*", "", line) for line in docker]


def script(cwd: Path, name: str, *args: str, secrets: str = "secrets") -> None:
    subprocess.run([str(cwd / "scripts" / name), *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "FACECAP_SECRETS": str(cwd / secrets)})


def subject(cert: Path) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-subject"], check=True,
                          capture_output=True, text=True).stdout


def test_both_cas_work_during_a_rotation_and_a_removal_refuses_either(tmp_path: Path) -> None:
    shutil.copytree(SCRIPTS, tmp_path / "scripts")
    old, new = tmp_path / "secrets", tmp_path / "secrets-new"
    # Before: the broker and three devices of the old CA.
    script(tmp_path, "init-broker.sh", "--make-ca", "127.0.0.1", "localhost")
    for device in ("jetson-a", "jetson-b", "jetson-c"):
        script(tmp_path, "add-device.sh", device)
    step2, step3, step5, step6 = rotation_blocks()

    # 1. The new CA; its name differs from the old one's.
    script(tmp_path, "make-ca.sh", secrets="secrets-new")
    assert subject(old / "ca" / "ca.crt") != subject(new / "ca" / "ca.crt")
    # 2. Everyone trusts both; the processor restarts (it connects below, with its new ca.crt).
    assert run_block(step2, tmp_path) == ["docker compose restart processor"]
    # 3. The broker's certificate from the new CA and both CRLs; the restart is this broker's start.
    assert run_block(step3, tmp_path, **{"<Elastic IP> [DNS name]": "127.0.0.1 localhost"}) \
        == ["docker compose restart broker"]
    # 4. jetson-b and jetson-c get certificates of the new CA; jetson-a has not been done yet.
    for device in ("jetson-b", "jetson-c"):
        script(tmp_path, "add-device.sh", device, secrets="secrets-new")

    with shipped_broker_running(tmp_path / "broker", old) as cloud:
        def answer(name: str, ca: str) -> str | None:
            """How the broker answers the device's certificate of the old or new CA (None: accepted)."""
            files = (old if ca == "old" else new) / "devices" / name
            return tls_refusal(cloud.device_settings(name, cert_file=str(files / "client.crt"),
                                                     key_file=str(files / "client.key")))

        working = [("jetson-a", "old"), ("jetson-b", "old"), ("jetson-b", "new")]
        for name, ca in [*working, ("jetson-c", "old"), ("jetson-c", "new")]:
            assert answer(name, ca) is None, (name, ca, cloud.log_text()[-2000:])
        connect(cloud.processor_settings(), "processor").stop()

        # 5. jetson-c is removed: both its certificates are refused, everyone else still connects.
        assert run_block(step5, tmp_path, **{"jetson-07": "jetson-c"}) == ["docker compose kill -s HUP broker"]
        cloud.reload()
        for ca in ("old", "new"):
            assert "certificate revoked" in (answer("jetson-c", ca) or "accepted"), ca
        for name, ca in working:
            assert answer(name, ca) is None, (name, ca, cloud.log_text()[-2000:])

    # 6. The new CA alone; the scripts now sign with it.
    assert run_block(step6, tmp_path) == ["docker compose restart broker processor"]
    for trusted in (old / "broker" / "ca.crt", old / "processor" / "ca.crt"):
        assert trusted.read_bytes() == (old / "ca" / "ca.crt").read_bytes()
    assert (old / "broker" / "crl.pem").read_bytes().count(b"BEGIN X509 CRL") == 1

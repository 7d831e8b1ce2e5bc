"""The local servers the other tests stand on really run and really enforce what they claim."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from facecap.devkit.link import TcpProxy
from facecap.devkit.servers import LOOPBACK, S3Server, ephemeral_ports_start, free_port

from .conftest import MosquittoFactory

pytestmark = pytest.mark.integration


def test_s3_server_stores_with_metadata_and_refuses_bad_keys(s3_server: S3Server) -> None:
    import boto3
    from botocore.exceptions import ClientError

    s3 = s3_server.client()
    s3.create_bucket(Bucket="facecap-fixture")  # type: ignore[attr-defined]
    s3.put_object(Bucket="facecap-fixture", Key="a/b.jpg", Body=b"\xff\xd8\xffdata",  # type: ignore[attr-defined]
                  ContentType="image/jpeg", Metadata={"face-id": "x"})
    got = s3.get_object(Bucket="facecap-fixture", Key="a/b.jpg")  # type: ignore[attr-defined]
    assert got["Body"].read() == b"\xff\xd8\xffdata"
    assert got["ContentType"] == "image/jpeg"
    assert got["Metadata"] == {"face-id": "x"}
    intruder = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                            aws_access_key_id=S3Server.ACCESS_KEY, aws_secret_access_key="wrong")
    with pytest.raises(ClientError):
        intruder.list_objects_v2(Bucket="facecap-fixture")
    with pytest.raises(ClientError):  # no bucket appears by itself
        s3.put_object(Bucket="not-created", Key="k", Body=b"x")  # type: ignore[attr-defined]


def test_password_broker_refuses_anonymous(mosquitto: MosquittoFactory) -> None:
    server = mosquitto(users={"device-1": "secret-1"})
    anonymous = subprocess.run(
        ["mosquitto_pub", "-h", server.host, "-p", str(server.port), "-t", "x", "-m", "y", "-q", "1"],
        capture_output=True, text=True, timeout=10, check=False)
    assert anonymous.returncode != 0
    authorised = subprocess.run(
        ["mosquitto_pub", "-h", server.host, "-p", str(server.port), "-t", "x", "-m", "y", "-q", "1",
         "-u", "device-1", "-P", "secret-1"], capture_output=True, text=True, timeout=10, check=False)
    assert authorised.returncode == 0, authorised.stderr


def test_free_ports_come_from_below_the_ephemeral_range_and_are_free() -> None:
    # A port from the ephemeral range can be taken as the source port of an outgoing connection before a
    # server binds it (weed mini lost its S3 port that way in CI); below the range, only a listener can.
    start = ephemeral_ports_start()
    ports = {free_port() for _ in range(20)}
    assert all(port < start for port in ports), (start, sorted(ports))
    assert len(ports) > 1  # chosen at random, so tests started together rarely pick the same one
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, port))  # raises if it was not free


def test_the_cuttable_link_keeps_an_idle_connection_and_cuts_on_demand() -> None:
    """An idle link stays up (a bridge is quiet between keep-alives); it used to be cut after 5 s."""
    with socket.create_server((LOOPBACK, 0)) as target:
        link = TcpProxy(target.getsockname()[1])
        try:
            client = socket.create_connection((LOOPBACK, link.port), timeout=10)
            server_side, _ = target.accept()
            time.sleep(6)  # longer than the connect timeout that stayed on the upstream socket
            server_side.sendall(b"still here")
            assert client.recv(64) == b"still here"
            link.cut()
            assert client.recv(64) == b""  # cut: the connection is gone
            server_side.close()
            client.close()
        finally:
            link.close()

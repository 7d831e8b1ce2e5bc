"""The local servers the other tests stand on really run and really enforce what they claim."""

from __future__ import annotations

import subprocess

import pytest

from facecap.devkit.servers import S3Server

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

"""cloud/cloudformation.yaml deployed in moto (AWS mocked in memory), and its role's permissions exercised.

What moto really does here (moto 5.2): it creates the bucket, role, instance profile, security groups,
Elastic IP, launch template and instance, resolving parameters, conditions, Sub and GetAtt. It has no
CloudFormation model for AWS::S3::BucketPolicy and AWS::EC2::EIPAssociation (it warns and skips them), and
its bucket takes only BucketEncryption and Tags from the template (no public access block, lifecycle or
versioning), so those are checked on the template itself. With IAM authentication switched on, moto evaluates the
Action and Resource elements of the policies of the caller, including an assumed role's inline and managed
policies, on every S3 request; it does not evaluate Condition blocks of identity policies or bucket
(resource) policies. The role's policy has neither, so the S3 calls below are a real evaluation of it.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import warnings
from collections.abc import Iterator
from typing import Any, Final

import pytest
import yaml

from .conftest import REPO

pytestmark = pytest.mark.integration

if os.environ.get("CI") != "true":  # under CI a missing moto fails at the import below
    pytest.importorskip("moto", reason="pip install moto (extra cloudcheck)")
import boto3  # noqa: E402 - after the availability check above
import moto  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from moto.core import enable_iam_authentication  # noqa: E402
from moto.core.models import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.iam.models import iam_backends  # noqa: E402
from moto.ssm.models import Parameter, ssm_backends  # noqa: E402

TEMPLATE = REPO / "cloud" / "cloudformation.yaml"
REGION: Final = "eu-west-1"
UBUNTU_AMI_PARAMETER = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
# Moto has no CloudFormation model for these; the template's own checks below cover them.
NOT_MODELLED_BY_MOTO = {"AWS::S3::BucketPolicy", "AWS::EC2::EIPAssociation"}
# Moto's bucket model applies only BucketEncryption and Tags from the template; the other bucket
# properties are checked on the template (and by checkov).


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short forms (!Ref, !Sub, ...) as {"Ref": ...} / {"Fn::Sub": ...}."""


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


CfnLoader.add_multi_constructor("!", _short_form)


def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)  # noqa: S506 - safe loader
    return loaded


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with moto.mock_aws():
        yield


def seed_public_ami_parameter() -> None:
    """AWS publishes the Ubuntu image id as a public SSM parameter; moto does not know it and refuses a
    put under /aws/, so the test stores it in moto's parameter store directly."""
    ami = boto3.client("ec2", region_name=REGION).describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    store = ssm_backends[DEFAULT_ACCOUNT_ID][REGION]._parameters
    store[UBUNTU_AMI_PARAMETER].append(Parameter(  # type: ignore[abstract]
        account_id=DEFAULT_ACCOUNT_ID, name=UBUNTU_AMI_PARAMETER, value=ami, parameter_type="String",
        description=None, allowed_pattern=None, keyid=None, last_modified_date=datetime.datetime.now(),
        version=1, data_type="aws:ec2:image"))


def deploy(**parameters: str) -> dict[str, Any]:
    """Create the stack in moto with the default VPC; returns outputs, resources and moto's warnings."""
    seed_public_ami_parameter()
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    values = {"VpcId": vpc, "SubnetId": subnet, "AllowedCidr": "203.0.113.0/24",
              "RepositoryUrl": "https://git.example.com/facecap.git", **parameters}
    cfn = boto3.client("cloudformation", region_name=REGION)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfn.create_stack(StackName="facecap", TemplateBody=TEMPLATE.read_text(),
                         Capabilities=["CAPABILITY_IAM"],
                         Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()])
        stack = cfn.describe_stacks(StackName="facecap")["Stacks"][0]
        resources = {r["LogicalResourceId"]: r for r in
                     cfn.list_stack_resources(StackName="facecap")["StackResourceSummaries"]}
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]},
        "resources": resources,
        "warnings": [str(w.message) for w in caught],
    }


def physical_id(stack: dict[str, Any], logical: str) -> str:
    value: str = stack["resources"][logical]["PhysicalResourceId"]
    return value


def inline_policies(role_name: str) -> dict[str, dict[str, Any]]:
    """The role's inline policies as moto's CloudFormation created them (Sub and Ref resolved).

    Moto's CloudFormation stores such a document as a dict where its IAM API, and the evaluator behind
    enable_iam_authentication, expect JSON text (the evaluator fails on a dict); the same document is
    stored again as JSON so that moto can evaluate it."""
    backend = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam = boto3.client("iam", region_name=REGION)
    documents = {}
    for name in backend.list_role_policies(role_name):
        _, document = backend.get_role_policy(role_name, name)
        parsed: dict[str, Any] = json.loads(document) if isinstance(document, str) else dict(document)
        iam.put_role_policy(RoleName=role_name, PolicyName=name, PolicyDocument=json.dumps(parsed))
        documents[name] = parsed
    return documents


def test_stack_creates_an_encrypted_bucket(aws: None) -> None:
    stack = deploy()
    bucket = stack["outputs"]["BucketName"]
    s3 = boto3.client("s3", region_name=REGION)
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert stack["outputs"]["FacesLocation"] == f"s3://{bucket}/faces/"
    # Exactly the resources moto cannot model were skipped, nothing else.
    skipped = {w.split("parse ")[1].split(" but")[0] for w in stack["warnings"] if "not supported" in w}
    assert skipped == NOT_MODELLED_BY_MOTO


def test_security_group_opens_only_mqtt_tls_to_the_given_cidr(aws: None) -> None:
    stack = deploy(AllowedCidr="198.51.100.0/24")
    ec2 = boto3.client("ec2", region_name=REGION)
    group = ec2.describe_security_groups(GroupIds=[physical_id(stack, "BrokerSecurityGroup")])["SecurityGroups"][0]
    ingress = [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
               for p in group["IpPermissions"]]
    assert ingress == [("tcp", 8883, 8883, ["198.51.100.0/24"])]
    assert "SshIngress" not in stack["resources"]


def test_ssh_opens_only_when_a_cidr_is_given(aws: None) -> None:
    stack = deploy(SshCidr="192.0.2.10/32")
    ec2 = boto3.client("ec2", region_name=REGION)
    group = ec2.describe_security_groups(GroupIds=[physical_id(stack, "BrokerSecurityGroup")])["SecurityGroups"][0]
    ssh = [p for p in group["IpPermissions"] if p.get("FromPort") == 22]
    assert [r["CidrIp"] for p in ssh for r in p["IpRanges"]] == ["192.0.2.10/32"]


def test_instance_runs_with_the_role_and_starts_the_stack(aws: None) -> None:
    stack = deploy(Prefix="site-1/faces")
    ec2 = boto3.client("ec2", region_name=REGION)
    instance_id = stack["outputs"]["InstanceId"]
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    profile_arn = instance["IamInstanceProfile"]["Arn"]
    iam = boto3.client("iam", region_name=REGION)
    profile = iam.get_instance_profile(InstanceProfileName=physical_id(stack, "ProcessorInstanceProfile"))
    assert profile["InstanceProfile"]["Arn"] == profile_arn
    assert [r["Arn"] for r in profile["InstanceProfile"]["Roles"]] == [stack["outputs"]["ProcessorRoleArn"]]
    user_data = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    bucket = stack["outputs"]["BucketName"]
    address = stack["outputs"]["BridgeAddress"]
    assert script.startswith("#!/bin/bash\n")
    assert f"FACECAP_BUCKET={bucket}\n" in script
    assert "FACECAP_PREFIX=site-1/faces\n" in script
    assert f"AWS_REGION={REGION}\n" in script
    # The CA is made on the instance only when asked for; by default the script stops before the broker.
    assert "if [ 'false' = true ]; then" in script
    assert f"scripts/init-broker.sh --make-ca {address}" in script
    assert "docker compose up -d --build" in script
    assert "${" not in script, "a Sub variable was left unresolved"
    assert stack["outputs"]["BridgeEndpoint"] == f"{address}:8883"
    addresses = ec2.describe_addresses(PublicIps=[address])["Addresses"]
    assert addresses and addresses[0]["Domain"] == "vpc"


def test_role_has_only_the_put_policy(aws: None) -> None:
    iam = boto3.client("iam", region_name=REGION)
    stack = deploy()
    role = physical_id(stack, "ProcessorRole")
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["put-faces"]
    document = inline_policies(role)["put-faces"]
    bucket = stack["outputs"]["BucketName"]
    assert document["Statement"] == [{"Sid": "PutFacesUnderPrefix", "Effect": "Allow", "Action": "s3:PutObject",
                                      "Resource": f"arn:aws:s3:::{bucket}/faces/*"}]
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "ec2.amazonaws.com"}]


def assumed_role_s3(role_arn: str) -> Any:
    """An S3 client with the role's temporary credentials, as the instance's processor gets them."""
    credentials = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=role_arn, RoleSessionName="processor")["Credentials"]
    return boto3.client("s3", region_name=REGION, aws_access_key_id=credentials["AccessKeyId"],
                        aws_secret_access_key=credentials["SecretAccessKey"],
                        aws_session_token=credentials["SessionToken"])


def denied(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError as exc:
        return exc.response["Error"]["Code"] == "AccessDenied"
    return False


def test_role_may_put_under_the_prefix_and_nothing_else(aws: None) -> None:
    stack = deploy(Prefix="faces")
    bucket = stack["outputs"]["BucketName"]
    admin = boto3.client("s3", region_name=REGION)
    admin.put_object(Bucket=bucket, Key="faces/dev-1/existing.jpg", Body=b"\xff\xd8old")
    admin.create_bucket(Bucket="someone-elses-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
    inline_policies(physical_id(stack, "ProcessorRole"))
    s3 = assumed_role_s3(stack["outputs"]["ProcessorRoleArn"])

    with enable_iam_authentication():
        # Allowed: faces and the quarantine, both under the prefix, with the headers the processor sends.
        s3.put_object(Bucket=bucket, Key="faces/dev-1/2026/11/22/10/x_01J.jpg", Body=b"\xff\xd8face",
                      ContentType="image/jpeg", Metadata={"face-id": "01J"}, ServerSideEncryption="AES256")
        s3.put_object(Bucket=bucket, Key="faces/quarantine/2026/11/22/not-an-image/abc.bin", Body=b"x")
        # Denied: writes outside the prefix, in another bucket, and every read, list or delete.
        assert denied(s3.put_object, Bucket=bucket, Key="elsewhere/x.jpg", Body=b"x")
        assert denied(s3.put_object, Bucket=bucket, Key="faces-other/x.jpg", Body=b"x")
        assert denied(s3.put_object, Bucket=bucket, Key="x.jpg", Body=b"x")
        assert denied(s3.put_object, Bucket="someone-elses-bucket", Key="faces/x.jpg", Body=b"x")
        assert denied(s3.get_object, Bucket=bucket, Key="faces/dev-1/existing.jpg")
        assert denied(s3.delete_object, Bucket=bucket, Key="faces/dev-1/existing.jpg")
        assert denied(s3.list_objects_v2, Bucket=bucket)
        assert denied(s3.delete_bucket, Bucket=bucket)

    stored = admin.get_object(Bucket=bucket, Key="faces/dev-1/2026/11/22/10/x_01J.jpg")
    assert stored["Body"].read() == b"\xff\xd8face"
    assert stored["ContentType"] == "image/jpeg"
    keys = {o["Key"] for o in admin.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"faces/dev-1/existing.jpg", "faces/dev-1/2026/11/22/10/x_01J.jpg",
                    "faces/quarantine/2026/11/22/not-an-image/abc.bin"}


# --- what moto does not model, checked on the template ------------------------------------------------------

@pytest.mark.unit
def test_bucket_policy_refuses_requests_without_tls() -> None:
    resources = template()["Resources"]
    policy = resources["FacesBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "FacesBucket"}
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    insecure = statements["DenyInsecureTransport"]
    assert (insecure["Effect"], insecure["Principal"], insecure["Action"]) == ("Deny", "*", "s3:*")
    assert insecure["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::GetAtt": ["FacesBucket", "Arn"]} in insecure["Resource"]
    assert {"Fn::Sub": "${FacesBucket.Arn}/*"} in insecure["Resource"]
    assert all(s["Effect"] == "Deny" for s in statements.values()), "the bucket policy only ever denies"


@pytest.mark.unit
def test_elastic_ip_is_associated_with_the_instance() -> None:
    association = template()["Resources"]["BrokerAddressAssociation"]["Properties"]
    assert association == {"AllocationId": {"Fn::GetAtt": ["BrokerAddress", "AllocationId"]},
                           "InstanceId": {"Ref": "BrokerInstance"}}


@pytest.mark.unit
def test_no_open_world_default_and_imdsv2_with_room_for_containers() -> None:
    loaded = template()
    assert "Default" not in loaded["Parameters"]["AllowedCidr"]
    assert loaded["Parameters"]["SshCidr"]["Default"] == ""
    metadata = loaded["Resources"]["BrokerLaunchTemplate"]["Properties"]["LaunchTemplateData"]["MetadataOptions"]
    assert metadata["HttpTokens"] == "required"
    # The processor asks the metadata service for credentials from inside a container: one hop more.
    assert metadata["HttpPutResponseHopLimit"] == 2


@pytest.mark.unit
def test_bucket_blocks_public_access_and_expires_faces_after_the_parameter() -> None:
    loaded = template()
    bucket = loaded["Resources"]["FacesBucket"]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    [rule] = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == {"Ref": "ExpirationDays"}
    assert loaded["Parameters"]["ExpirationDays"]["MinValue"] == 1
    assert bucket["VersioningConfiguration"] == {"Fn::If": ["Versioned", {"Status": "Enabled"},
                                                            {"Ref": "AWS::NoValue"}]}
    # On by default, so the role's PutObject cannot destroy a face: a replaced version is kept 30 days.
    assert loaded["Parameters"]["EnableVersioning"]["Default"] == "true"
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert loaded["Parameters"]["CreateCaOnInstance"]["Default"] == "false"


@pytest.mark.unit
def test_session_manager_policy_only_when_asked_for() -> None:
    # Moto's CloudFormation ignores ManagedPolicyArns, so this condition is checked on the template.
    loaded = template()
    assert loaded["Parameters"]["EnableSessionManager"]["Default"] == "false"
    assert loaded["Resources"]["ProcessorRole"]["Properties"]["ManagedPolicyArns"] == {"Fn::If": [
        "UseSessionManager",
        [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"}],
        {"Ref": "AWS::NoValue"}]}


@pytest.mark.unit
def test_security_group_lets_out_only_http_and_https() -> None:
    # Moto's CloudFormation ignores SecurityGroupEgress (it keeps the default allow-all rule).
    group = template()["Resources"]["BrokerSecurityGroup"]["Properties"]
    egress = [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in group["SecurityGroupEgress"]]
    assert sorted(egress) == [("tcp", 80, 80), ("tcp", 443, 443)]

"""recipes/deployment.json: the `aws greengrassv2 create-deployment --cli-input-json` template.

It deploys the bundle and, next to it, the three components it depends on: Greengrass applies a
deployment's configuration update only to the components the deployment names (root components), so a
component that is only pulled in as a dependency keeps its defaults.
"""

from __future__ import annotations

import json
from typing import Any

from .components import EDGE_BROKER, EDGE_STACK, FACE_DETECTOR, FACE_LOGGER

# Placeholders the user replaces (recipes/README.md lists them).
PLACEHOLDERS = {
    "REGION": "AWS region of the Greengrass core device, e.g. eu-west-1",
    "ACCOUNT_ID": "12-digit AWS account id",
    "THING_NAME": "the core device's AWS IoT thing name, used as its facecap device id",
    "BRIDGE_ADDRESS": "the cloud broker's address (the CloudFormation output BridgeAddress)",
}
# Where the files that cloud/scripts/add-device.sh hands out are copied on the device.
CLOUD_FILES = "/greengrass/v2/facecap/cloud"

MERGES: dict[str, dict[str, Any]] = {
    EDGE_BROKER.name: {
        "deviceId": "THING_NAME",
        "bridge": {
            "host": "BRIDGE_ADDRESS", "port": 8883, "tls": True,
            "caFile": f"{CLOUD_FILES}/ca.crt", "certFile": f"{CLOUD_FILES}/client.crt",
            # The certificate is the device's identity on the cloud broker: no user name or password.
            "keyFile": f"{CLOUD_FILES}/client.key",
        },
    },
    FACE_DETECTOR.name: {"deviceId": "THING_NAME", "cameraId": "camera0", "camera": {"source": "0"}},
    FACE_LOGGER.name: {"deviceId": "THING_NAME"},
}


def render_deployment_template(version: str) -> str:
    components: dict[str, Any] = {EDGE_STACK.name: {"componentVersion": version}}
    for name, merge in MERGES.items():
        components[name] = {
            "componentVersion": version,
            # The API takes the merge as a JSON document in a string.
            "configurationUpdate": {"merge": json.dumps(merge, separators=(",", ":"))},
        }
    template = {
        "targetArn": "arn:aws:iot:REGION:ACCOUNT_ID:thing/THING_NAME",
        "deploymentName": "facecap-edge-THING_NAME",
        "components": components,
        "deploymentPolicies": {
            "failureHandlingPolicy": "ROLLBACK",
            "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
            "configurationValidationPolicy": {"timeoutInSeconds": 60},
        },
    }
    return json.dumps(template, indent=2) + "\n"

"""recipes/deployment.json: the `aws greengrassv2 create-deployment --cli-input-json` template.

One deployment for a whole thing group: nothing in it differs per device. The device id defaults to the
thing name (AWS_IOT_THING_NAME), the bridge user name to the device id, and each device keeps its own
certificate at the same path. It deploys the bundle and, next to it, the three components it depends on:
Greengrass applies a deployment's configuration update only to the components the deployment names (root
components), so a component that is only pulled in as a dependency keeps its defaults.
"""

from __future__ import annotations

import json
from typing import Any

from .components import EDGE_BROKER, EDGE_STACK, FACE_DETECTOR, FACE_LOGGER

# Placeholders the user replaces (recipes/README.md lists them).
PLACEHOLDERS = {
    "REGION": "AWS region of the Greengrass core device, e.g. eu-west-1",
    "ACCOUNT_ID": "12-digit AWS account id",
    "THING_GROUP": "the AWS IoT thing group of the facecap core devices, e.g. facecap-edge",
    "BRIDGE_ADDRESS": "the cloud broker's address (the CloudFormation output BridgeAddress)",
}
# Where the files that cloud/scripts/add-device.sh hands out are copied on the device.
CLOUD_FILES = "/greengrass/v2/facecap/cloud"

MERGES: dict[str, dict[str, Any]] = {
    EDGE_BROKER.name: {
        "bridge": {
            "host": "BRIDGE_ADDRESS", "port": 8883, "tls": True,
            "caFile": f"{CLOUD_FILES}/ca.crt", "certFile": f"{CLOUD_FILES}/client.crt",
            # The certificate is the device's identity on the cloud broker: no user name or password.
            "keyFile": f"{CLOUD_FILES}/client.key",
        },
    },
    FACE_DETECTOR.name: {"cameraId": "camera0", "camera": {"source": "0"}},
}

# Deployment policies. ROLLBACK: a device whose deployment fails goes back to what it ran. The components
# answer a configuration validation at once; 30 s leaves room for a busy device without holding a
# deployment long. They do not defer updates (no SubscribeToComponentUpdates): 60 s is only the ceiling.
DEPLOYMENT_POLICIES: dict[str, Any] = {
    "failureHandlingPolicy": "ROLLBACK",
    "componentUpdatePolicy": {"timeoutInSeconds": 60, "action": "NOTIFY_COMPONENTS"},
    "configurationValidationPolicy": {"timeoutInSeconds": 30},
}
# The rollout over the group as an AWS IoT job: a few devices first, faster while they succeed; cancelled
# when more than 10 % of at least 5 finished devices failed (a bad release stops early); a device that has
# not finished within an hour (the detector's Install downloads nothing, but a slow link fetches artifacts)
# counts as failed.
IOT_JOB_CONFIGURATION: dict[str, Any] = {
    "jobExecutionsRolloutConfig": {
        "exponentialRate": {"baseRatePerMinute": 5, "incrementFactor": 2.0,
                            "rateIncreaseCriteria": {"numberOfSucceededThings": 5}},
        "maximumPerMinute": 50,
    },
    "abortConfig": {"criteriaList": [{"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 10.0,
                                      "minNumberOfExecutedThings": 5}]},
    "timeoutConfig": {"inProgressTimeoutInMinutes": 60},
}


def render_deployment_template(version: str) -> str:
    components: dict[str, Any] = {EDGE_STACK.name: {"componentVersion": version}}
    for spec in (EDGE_BROKER, FACE_DETECTOR, FACE_LOGGER):
        components[spec.name] = {"componentVersion": version}
        if spec.name in MERGES:
            # The API takes the merge as a JSON document in a string.
            merge = json.dumps(MERGES[spec.name], separators=(",", ":"))
            components[spec.name]["configurationUpdate"] = {"merge": merge}
    template = {
        "targetArn": "arn:aws:iot:REGION:ACCOUNT_ID:thinggroup/THING_GROUP",
        "deploymentName": "facecap-edge-THING_GROUP",
        "components": components,
        "deploymentPolicies": DEPLOYMENT_POLICIES,
        "iotJobConfiguration": IOT_JOB_CONFIGURATION,
    }
    return json.dumps(template, indent=2) + "\n"

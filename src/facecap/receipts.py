"""Receipts, contract v1.1 (docs/contract.md): the cloud tells a device which of its faces are finished.

After the processor stores a face (or quarantines a message), it publishes to `facecap/<device-id>/receipts`
(QoS 1) one compact JSON object listing the face ids it finished:

    {"schema": "facecap-receipt/1", "stored": ["01J...", ...], "quarantined": ["01J...", ...]}

A producer with an outbox deletes those faces; a producer without one never subscribes, so v1 producers
are unaffected. A receipt may be lost or come twice: the producer then publishes a face again, which lands
on the same object key, or deletes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .contract import check_id
from .errors import ContractError

RECEIPT_SCHEMA = "facecap-receipt/1"
RECEIPT_CONTENT_TYPE = "application/json"
# Face ids are ULIDs; a legacy face (a bare image) is known by the sha256 of its payload.
_RECEIPT_ID = re.compile(r"^(?:[0-9A-HJKMNP-TV-Z]{26}|[0-9a-f]{64})$")
# Keeps one receipt well under any broker's message size limit (about 30 bytes per id).
MAX_IDS_PER_RECEIPT = 1000


def receipt_topic(device_id: str) -> str:
    return f"facecap/{check_id('device-id', device_id)}/receipts"


def is_receipt_id(face_id: str) -> bool:
    return bool(_RECEIPT_ID.match(face_id))


@dataclass(frozen=True)
class Receipt:
    stored: tuple[str, ...] = ()
    quarantined: tuple[str, ...] = ()

    @property
    def face_ids(self) -> tuple[str, ...]:
        return self.stored + self.quarantined


def encode_receipt(stored: Sequence[str], quarantined: Sequence[str] = ()) -> bytes:
    body: dict[str, object] = {"schema": RECEIPT_SCHEMA, "stored": list(stored)}
    if quarantined:
        body["quarantined"] = list(quarantined)
    return json.dumps(body, separators=(",", ":")).encode()


def parse_receipt(payload: bytes) -> Receipt:
    """Read a receipt, or raise ContractError. Unknown keys are ignored, so later versions may add some."""
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError("bad-receipt", f"receipt is not JSON: {exc}") from None
    except RecursionError:  # nested deeper than the parser's stack allows: no receipt looks like that
        raise ContractError("bad-receipt", "receipt is nested too deeply") from None
    if not isinstance(body, dict) or body.get("schema") != RECEIPT_SCHEMA:
        raise ContractError("bad-receipt", f"receipt schema is not {RECEIPT_SCHEMA}")
    lists = []
    for name in ("stored", "quarantined"):
        ids = body.get(name, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) and is_receipt_id(i) for i in ids):
            raise ContractError("bad-receipt", f"receipt {name} is not a list of face ids")
        lists.append(tuple(ids))
    return Receipt(lists[0], lists[1])

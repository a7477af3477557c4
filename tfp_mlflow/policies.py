"""Augmentation policies: albumentations-serialised JSON, validated before it enters the cloud.

Only the structure is checked here (JSON object, a ``transform`` tree whose every class is one albumentations
itself can deserialise, never ``Lambda`` or another callable); loading and translating policies written by
albumentations 1.3.0 for 2.x comes with the evaluation.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tfp_mlflow.errors import BadInputError

__all__ = ["read_policy", "validate_policy", "MAX_POLICY_BYTES"]

MAX_POLICY_BYTES = 1 << 20
MAX_DEPTH = 12


def read_policy(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a policy JSON file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"policy file {str(path)!r} does not exist")
    if path.stat().st_size > MAX_POLICY_BYTES:
        raise BadInputError(f"policy file {str(path)!r} is larger than {MAX_POLICY_BYTES // 1024} KiB")
    try:
        policy = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"policy file {str(path)!r} is not valid JSON ({exc})") from None
    try:
        return validate_policy(policy)
    except BadInputError as exc:
        raise BadInputError(f"policy file {str(path)!r}: {exc}") from None


def validate_policy(policy: Any) -> dict[str, Any]:
    """Check that ``policy`` is an albumentations serialisation of known, deserialisable transforms."""
    from albumentations.core.serialization import SERIALIZABLE_REGISTRY

    if not isinstance(policy, dict) or not isinstance(policy.get("transform"), dict):
        raise BadInputError("a policy is a JSON object with a 'transform' entry (albumentations' to_dict format)")

    def walk(node: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise BadInputError(f"the policy nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            name = node.get("__class_fullname__")
            if name is not None:
                short = str(name).rsplit(".", 1)[-1]
                if not isinstance(name, str) or short not in SERIALIZABLE_REGISTRY or short == "Lambda" or (
                        "." in name and not name.startswith("albumentations.")):
                    raise BadInputError(f"the policy names {name!r}, which is not an albumentations transform")
            for value in node.values():
                walk(value, depth + 1)
        elif isinstance(node, list):
            for value in node:
                walk(value, depth + 1)

    walk(policy["transform"], 0)
    return policy

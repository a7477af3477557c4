"""Augmentation policies: albumentations-serialised JSON, validated before it enters the cloud.

A policy is checked before it enters the cloud (JSON object, a ``transform`` tree whose every class is one
albumentations itself can deserialise, never ``Lambda`` or another callable). The original JSON is what the cloud
stores; :func:`load_policy` translates a policy written by albumentations 1.x (such as the 213 Faster-AutoAugment
policies of the reference study, written by 1.3.0) into the 2.x arguments on load, because 2.x silently drops
arguments it does not know (CoarseDropout falls back to default holes, Solarize to 0.5, an RGBShift limit of 1
means 255).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from tfp_mlflow.errors import BadInputError, first_line

__all__ = ["read_policy", "validate_policy", "translate_policy", "load_policy", "MAX_POLICY_BYTES"]

MAX_POLICY_BYTES = 1 << 20
MAX_DEPTH = 12


def read_policy(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a policy JSON file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"policy file {str(path)!r} does not exist")
    if path.stat().st_size > MAX_POLICY_BYTES:
        raise BadInputError(f"policy file {str(path)!r} is larger than {MAX_POLICY_BYTES // 1024} KiB")
    from tfp_mlflow import _json

    policy = _json.loads(path.read_bytes(), f"policy file {str(path)!r}", max_bytes=MAX_POLICY_BYTES,
                         max_depth=4 * MAX_DEPTH)
    try:
        validate_policy(policy)
        load_policy(policy)   # built once here, so a policy albumentations cannot build is refused, not stored
        return policy
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


def translate_policy(policy: dict[str, Any], image_side: int | None = None) -> dict[str, Any]:
    """The 2.x form of an albumentations 1.x policy (a new dict; 2.x policies pass through unchanged).

    ``image_side`` clamps CoarseDropout holes to the image (a hole larger than the image raises in both versions).
    """
    version = str(policy.get("__version__", "2"))
    if not version.startswith(("0.", "1.")):
        return json.loads(json.dumps(policy))

    def pair(value: Any) -> list:
        return list(value) if isinstance(value, (list, tuple)) else [value, value]

    def hole(values: list) -> list:
        return [min(v, image_side) if image_side and isinstance(v, int) else v for v in values]

    def node(entry: Any) -> Any:
        if isinstance(entry, list):
            return [node(e) for e in entry]
        if not isinstance(entry, dict):
            return entry
        out = {key: node(value) for key, value in entry.items()}
        if out.pop("always_apply", False):
            out["p"] = 1.0
        name = str(out.get("__class_fullname__", "")).rsplit(".", 1)[-1]
        if name == "ShiftScaleRotate":
            if "value" in out:
                out["fill"] = out.pop("value") or 0
            if "mask_value" in out:
                out["fill_mask"] = out.pop("mask_value") or 0
        elif name == "CoarseDropout":
            for old, new in (("holes", "num_holes_range"), ("height", "hole_height_range"),
                             ("width", "hole_width_range")):
                low, high = out.pop(f"min_{old}", None), out.pop(f"max_{old}", None)
                if high is not None:
                    values = [high if low is None else low, high]
                    out[new] = values if old == "holes" else hole(values)
            if "fill_value" in out:
                out["fill"] = out.pop("fill_value")
            if "mask_fill_value" in out:
                mask_fill = out.pop("mask_fill_value")
                if mask_fill is not None:
                    out["fill_mask"] = mask_fill
        elif name == "RGBShift":
            for key in ("r_shift_limit", "g_shift_limit", "b_shift_limit"):
                if key in out:
                    limit = out[key]       # 1.x: a scalar v meant (-v, v)
                    out[key] = [v / 255 for v in (pair(limit) if isinstance(limit, (list, tuple)) else
                                                  [-limit, limit])]
        elif name == "Solarize" and "threshold" in out:
            out["threshold_range"] = [t / 255 for t in pair(out.pop("threshold"))]
        return out

    translated = node(policy)
    translated["__version__"] = "2.0.8"
    return translated


def load_policy(policy: dict[str, Any], image_side: int | None = None):
    """An albumentations transform built from a policy (1.x policies translated first)."""

    import albumentations

    policy = validate_policy(policy)
    try:
        with warnings.catch_warnings():
            # 2.x warns about ShiftScaleRotate's deprecation on every construction; the policy is as recorded.
            warnings.simplefilter("ignore", UserWarning)
            return albumentations.from_dict(translate_policy(policy, image_side))
    except Exception as exc:  # albumentations raises ValueError, KeyError, TypeError, pydantic errors
        raise BadInputError(f"the policy cannot be built by albumentations {albumentations.__version__} "
                            f"({type(exc).__name__}: {first_line(exc)})") \
            from None

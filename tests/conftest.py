"""Shared fixtures: small specs and fingerprints drawn from known feature distributions."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from tfp_mlflow import FingerprintBuilder, FingerprintSpec, Task

# Model hubs are unreachable here: fail in seconds instead of retrying for minutes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")

NUM_FEATURES = 12


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL cluster on 127.0.0.1 for the whole session (the team set-up's database)."""
    from tfp_mlflow.testing.servers import LocalPostgres, postgres_binaries

    if postgres_binaries() is None:
        pytest.skip("PostgreSQL is not installed here (apt-get install postgresql; .ci/run installs it)")
    with LocalPostgres(databases=()) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def small_spec() -> FingerprintSpec:
    rng = np.random.default_rng(1)
    reference = rng.gamma(2.0, 1.0, size=(2000, NUM_FEATURES))
    return FingerprintSpec.calibrate(reference, backbone="test-backbone", weights_sha256="0" * 64,
                                     variants={"small": 100, "large": 1000})


def draw_features(seed: int, n: int = 400, shape: float = 2.0, m: int = NUM_FEATURES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.gamma(shape, 1.0 + 0.1 * rng.random(m), size=(n, m))


@pytest.fixture
def make_fingerprint(small_spec):
    def make(name: str, seed: int = 0, n: int = 400, shape: float = 2.0, moments: bool = False,
             keywords=("x-ray",), num_images: int = 100, spec=None):
        builder = FingerprintBuilder(spec or small_spec, second_moments=moments)
        builder.update(draw_features(seed, n, shape))
        return builder.build(name=name, keywords=keywords, num_images=num_images, num_classes=2,
                             class_counts={"a": num_images // 2, "b": num_images - num_images // 2}, seed=seed)
    return make


@pytest.fixture
def tasks(make_fingerprint):
    shapes = [1.5, 2.0, 2.5, 3.0, 4.0, 1.2]
    return [Task.from_fingerprint(make_fingerprint(f"task{i}", seed=i, shape=s, moments=True, num_images=50 + 10 * i,
                                                   keywords=["x-ray", f"k{i % 3}", "medical"][: 1 + i % 3]))
            for i, s in enumerate(shapes)]


# -- the catalogue of bad files: each is refused with one line naming the file and the problem ------------------

def _arrays(fp) -> dict:
    arrays = {f"counts_{v}": np.array(c) for v, c in fp.counts.items()}
    arrays["feature_sum"] = np.array(fp.feature_sum)
    arrays["meta"] = np.array(json.dumps(fp.metadata()))
    return arrays


def _meta(fp, **changes):
    meta = fp.metadata()
    meta.update(changes)
    return np.array(json.dumps(meta))


def _bad_files(fp):
    good = _arrays(fp)
    m = fp.num_features
    pickled = dict(good, feature_sum=np.array([object()] * m, dtype=object))
    return {
        "pickled object array": (pickled, "pickled objects"),
        "float counts": (dict(good, counts_small=good["counts_small"].astype(float)), "must be an integer array"),
        "wrong counts shape": (dict(good, counts_small=good["counts_small"][:, :1]), "expected"),
        "wrong feature rows": (dict(good, counts_large=good["counts_large"][:-1]), "expected"),
        "NaN in sums": (dict(good, feature_sum=np.where(np.arange(m) == 0, np.nan, good["feature_sum"])),
                        "NaN or infinity"),
        "negative counts": (dict(good, counts_small=good["counts_small"] * np.where(
            np.arange(100) == 0, -1, 1)), "negative"),
        "row sums differ from draws": (dict(good, meta=_meta(fp, num_draws=fp.num_draws + 1)), "sums to"),
        "wrong format version": (dict(good, meta=_meta(fp, format_version=99)), "format version 99"),
        "missing meta": ({k: v for k, v in good.items() if k != "meta"}, "lacks meta"),
        "missing counts": ({k: v for k, v in good.items() if not k.startswith("counts")}, "no histogram counts"),
        "meta not JSON": (dict(good, meta=np.array("{not json")), "not valid JSON"),
        "meta wrong type": (dict(good, meta=_meta(fp, num_images="many")), "num_images' must be int"),
        "path traversal name": (dict(good, meta=_meta(fp, name="../../etc/passwd")), "task name"),
        "too many keywords": (dict(good, meta=_meta(fp, keywords=[f"k{i}" for i in range(1000)])),
                              "at most 64"),
        "unexpected member": (dict(good, payload=np.zeros(3)), "unexpected members payload"),
        "class counts disagree": (dict(good, meta=_meta(fp, class_counts={"a": 1})), "class_counts sum"),
    }


def _write(path, arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture
def bad_catalogue(make_fingerprint, tmp_path):
    fp = make_fingerprint("victim", seed=5)
    files = {name: (_write(tmp_path / f"{i:02d}.npz", arrays), why)
             for i, (name, (arrays, why)) in enumerate(_bad_files(fp).items())}
    good = fp.save(tmp_path / "good.npz")
    raw = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    files["truncated zip"] = (tmp_path / "truncated.npz", "not a readable .npz")
    (tmp_path / "text.npz").write_text("hello")
    files["not a zip"] = (tmp_path / "text.npz", "not a readable .npz")
    bomb = tmp_path / "bomb.npz"
    bomb.write_bytes(_declare_huge(raw))
    files["zip bomb"] = (bomb, "declares")
    files["missing file"] = (tmp_path / "nope.npz", "does not exist")
    return files


def _declare_huge(raw: bytes) -> bytes:
    """Patch the central directory so one member declares 4 GiB uncompressed."""
    data = bytearray(raw)
    at = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, at + 24, 0xFFFFFFF0)
    return bytes(data)



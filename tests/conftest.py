"""Shared fixtures: small specs and fingerprints drawn from known feature distributions."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import zipfile

import numpy as np
import pytest

from tfp_mlflow import FingerprintBuilder, FingerprintSpec, Task
from tfp_mlflow.cloud.runs import configure_process

# Model hubs are unreachable here: fail in seconds instead of retrying for minutes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
configure_process()   # as the `tfp` command does: short HTTP retries, no run URLs on stdout

NUM_FEATURES = 12


def _missing(requirement: str) -> str | None:
    """Why a marker's requirement is not met here, or ``None`` when it is."""
    if requirement == "torch":
        return None if importlib.util.find_spec("torch") else "needs the torch extra (pip install 'tfp-mlflow[torch]')"
    if requirement == "gpu":
        if importlib.util.find_spec("torch") is None:
            return "needs torch with a CUDA GPU"
        import torch

        return None if torch.cuda.is_available() else "needs a CUDA GPU"
    if requirement == "browser":
        return None if shutil.which("chromium") or shutil.which("chromium-browser") else \
            "needs chromium (apt-get install chromium; .ci/run installs it)"
    if requirement == "server":
        return None if importlib.util.find_spec("tfp_mlflow_plugins") else \
            "needs the plugins (pip install ./plugins/tfp-mlflow-plugins)"
    return None


def pytest_collection_modifyitems(config, items):
    """A test marked with a requirement (torch, gpu, browser, server) is skipped, saying why, where it is not met;
    ``postgres`` skips in its fixture, where the binaries are looked for."""
    reasons: dict[str, str | None] = {}
    for item in items:
        for requirement in ("torch", "gpu", "browser", "server"):
            if item.get_closest_marker(requirement) is None:
                continue
            if requirement not in reasons:
                reasons[requirement] = _missing(requirement)
            if reasons[requirement]:
                item.add_marker(pytest.mark.skip(reason=reasons[requirement]))


#: What MLflow's fluent API writes to the process environment (``set_experiment``, a started run) for the
#: subprocesses it starts to inherit: a test that leaves one behind would send a later test's run elsewhere.
_FLUENT_VARIABLES = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


@pytest.fixture(autouse=True)
def _fluent_environment_restored():
    saved = {key: os.environ.get(key) for key in _FLUENT_VARIABLES}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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
        # Counts that wrap around: 2**64-1 in one bin of a uint64 row still "sums" to num_draws in int64.
        "uint64 wrap-around": (dict(good, counts_small=_wrapped(good["counts_small"])), "more than num_draws"),
        "4 x 2**62 in a row": (dict(good, counts_small=_with_bins(good["counts_small"])), "more than num_draws"),
        "float128 sums": (dict(good, feature_sum=good["feature_sum"].astype(np.longdouble)), "at most 8 bytes"),
        "complex sums": (dict(good, feature_sum=good["feature_sum"].astype(complex)), "float array"),
        "integer sums": (dict(good, feature_sum=good["feature_sum"].astype(np.int64)), "float array"),
        "2-d sums": (dict(good, feature_sum=good["feature_sum"][None, :]), "1-d float array"),
        "infinite sums": (dict(good, feature_sum=np.where(np.arange(m) == 1, np.inf, good["feature_sum"])),
                          "NaN or infinity"),
        "3-d counts": (dict(good, counts_small=good["counts_small"][None]), "declared"),
        "1-d counts": (dict(good, counts_small=good["counts_small"][0]), "declared"),
        "100,000 bins": (dict(good, counts_small=np.zeros((m, 100_000), dtype=np.int8)), "declared"),
        "bool counts": (dict(good, counts_small=good["counts_small"] > 0), "integer array"),
        "moments wrong shape": (dict(good, second_moments=np.eye(m + 1)), "second_moments"),
        "moments NaN": (dict(good, second_moments=np.full((m, m), np.nan)), "second_moments"),
        "moments integer": (dict(good, second_moments=np.eye(m, dtype=np.int64)), "second_moments"),
        "meta nested 200,000 deep": (dict(good, meta=np.array("[" * 200_000 + "]" * 200_000)), "nests deeper"),
        "meta NaN": (dict(good, meta=np.array(json.dumps(fp.metadata()).replace('"seed": 5', '"seed": NaN'))),
                     "not valid JSON"),
        "meta 1e400": (dict(good, meta=np.array(json.dumps(fp.metadata()).replace('"seed": 5', '"seed": 1e400'))),
                       "too large"),
        "meta a list": (dict(good, meta=np.array("[1, 2]")), "JSON object"),
        "meta a number array": (dict(good, meta=np.arange(3)), "JSON string"),
        "meta 5 MB": (dict(good, meta=np.array(" " * (5 * 2**20) + "{}")), "JSON string of at most 4 MB"),
        "negative draws": (dict(good, meta=_meta(fp, num_draws=-4)), "num_draws must be"),
        "10**12 draws": (dict(good, meta=_meta(fp, num_draws=10**12)), "num_draws must be"),
        "draws a bool": (dict(good, meta=_meta(fp, num_draws=True)), "num_draws' must be int"),
        "keywords a string": (dict(good, meta=_meta(fp, keywords="x-ray")), "keywords' must be list"),
        "keyword a number": (dict(good, meta=_meta(fp, keywords=[3])), "keyword 3 is invalid"),
        "negative class count": (dict(good, meta=_meta(fp, class_counts={"a": -1, "b": 101})), "non-negative"),
        "seed a string": (dict(good, meta=_meta(fp, seed="five")), "seed' must be int"),
        "spec id a number": (dict(good, meta=_meta(fp, spec_id=7)), "spec_id' must be str"),
        "empty name": (dict(good, meta=_meta(fp, name="")), "task name"),
        "200-character name": (dict(good, meta=_meta(fp, name="n" * 200)), "task name"),
        "negative images": (dict(good, meta=_meta(fp, num_images=-1, class_counts={})), "non-negative"),
        "format version a string": (dict(good, meta=_meta(fp, format_version="1")), "format version '1'"),
    }


def _wrapped(counts: np.ndarray) -> np.ndarray:
    """Row 0 with 2**64-1 in bin 0 and bin 0's count plus one moved to bin 1: the uint64 row sum wraps back to
    num_draws."""
    out = counts.astype(np.uint64)
    out[0, 1] += out[0, 0] + np.uint64(1)
    out[0, 0] = np.uint64(2**64 - 1)
    return out


def _with_bins(counts: np.ndarray) -> np.ndarray:
    """Row 0 with 2**62 added to four bins: 2**64 more, which an int64 row sum wraps back to num_draws."""
    out = counts.astype(np.int64)
    out[0, :4] += 2**62
    return out


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
    files["npy header declaring (2**40, 100)"] = (_lying_header(tmp_path / "lie.npz", fp, (2**40, 100)),
                                                  "declares shape")
    files["npy header declaring object dtype"] = (_lying_header(tmp_path / "obj.npz", fp, None, "|O"),
                                                  "pickled objects")
    files["npy version 9"] = (_lying_header(tmp_path / "v9.npz", fp, None, version=b"\x09\x00"), "header")
    nested = tmp_path / "nested.npz"
    with zipfile.ZipFile(nested, "w") as archive:
        for name, array in _arrays(fp).items():
            archive.writestr(f"sub/{name}.npy", _npy_bytes(array))
    files["member in a folder"] = (nested, "not plain arrays")
    files["missing file"] = (tmp_path / "nope.npz", "does not exist")
    return files


def _npy_bytes(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _lying_header(path, fp, shape=None, descr=None, version=None):
    """A fingerprint whose ``counts_small`` member's .npy header declares another shape, dtype or version."""
    arrays = _arrays(fp)
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            data = _npy_bytes(array)
            if name == "counts_small":
                header = {"descr": descr or array.dtype.str, "fortran_order": False,
                          "shape": shape or array.shape}
                text = repr(header).encode("latin1")
                text += b" " * (64 - (10 + len(text) + 1) % 64) + b"\n"
                data = b"\x93NUMPY" + (version or b"\x01\x00") + struct.pack("<H", len(text)) + text + \
                    array.tobytes()
            archive.writestr(f"{name}.npy", data)
    return path


def _declare_huge(raw: bytes) -> bytes:
    """Patch the central directory so one member declares 4 GiB uncompressed."""
    data = bytearray(raw)
    at = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, at + 24, 0xFFFFFFF0)
    return bytes(data)



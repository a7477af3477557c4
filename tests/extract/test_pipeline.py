"""`tfp fingerprint`: datasets, formats, determinism, shards, family retrieval and the bad-input catalogue."""
from __future__ import annotations

import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tfp_mlflow import BadInputError, Fingerprint, Task, default_spec, merge, rank_sources
from tfp_mlflow.cli import main
from tfp_mlflow.demo.tasks import DemoTask, demo_suite
from tfp_mlflow.extract import Draws, fingerprint_dataset, load_backbone, load_image, open_dataset

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("tf_efficientnet_lite0", device="cpu")


@pytest.fixture(scope="module")
def task_folder(tmp_path_factory):
    return DemoTask("fundus_tiny", "fundus", num_classes=2, num_images=12, image_size=64, seed=3).write(
        tmp_path_factory.mktemp("data") / "fundus_tiny")


def test_shipped_spec_matches_the_offline_backbone(backbone):
    spec = default_spec()
    assert spec.backbone == "tf_efficientnet_lite0" and spec.num_features == backbone.num_features == 1280
    assert spec.weights_sha256 == backbone.weights_sha256


def test_cli_writes_a_valid_fingerprint_and_same_seed_is_byte_identical(task_folder, tmp_path):
    runner = CliRunner()
    outputs = []
    for run in range(2):
        out = tmp_path / f"fp{run}.npz"
        result = runner.invoke(main, ["fingerprint", str(task_folder), "--out", str(out), "--samples", "24",
                                      "--batch-size", "8", "--seed", "5", "--keywords", "eye,Fundus_Photography",
                                      "--workers", "0" if run else "1"])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    fp = Fingerprint.load(tmp_path / "fp0.npz", default_spec())
    assert (fp.name, fp.num_draws, fp.num_images, fp.num_classes, fp.seed) == ("fundus_tiny", 24, 12, 2, 5)
    assert fp.keywords == ("eye", "fundus_photography") and sum(fp.class_counts.values()) == 12
    assert not list(tmp_path.glob("*.partial"))


def test_a_fingerprint_from_ten_images_works(tmp_path, backbone):
    folder = DemoTask("ten", "histology", num_classes=2, num_images=10, image_size=48, seed=1).write(tmp_path / "ten")
    fp = fingerprint_dataset(folder, backbone=backbone, progress=False, draws=Draws(samples=10, batch_size=4,
                                                                                    workers=0))
    assert fp.num_draws == 10 and fp.num_images == 10
    assert all((counts.sum(axis=1) == 10).all() for counts in fp.counts.values())


@pytest.mark.slow
def test_mixed_precision_moves_fewer_draws_than_another_draw_does_and_says_so(task_folder, backbone):
    """float16 autocast (as on a GPU; emulated on this CPU) against full precision, the same crops: some mass moves to
    a neighbouring bin, less than half of what drawing other crops moves (benchmarks/precision.py has the full
    table); the precision is recorded; an unknown one is one line."""
    spec = default_spec()

    def fingerprint(precision: str, seed: int = 0):
        draws = Draws(samples=32, batch_size=16, workers=0, precision=precision, seed=seed)
        return fingerprint_dataset(task_folder, spec=spec, progress=False, backbone=backbone, draws=draws)

    def moved(a, b) -> float:
        return float((0.5 * np.abs(a.histogram("small") - b.histogram("small")).sum(axis=1)).mean())
    full, mixed, other_draw = fingerprint("32"), fingerprint("16-mixed"), fingerprint("32", seed=1)
    assert mixed.num_draws == full.num_draws and mixed.extra["precision"] == "16-mixed"
    assert "precision" not in full.extra
    assert 0 < moved(mixed, full) < 0.5 * moved(other_draw, full), (moved(mixed, full), moved(other_draw, full))
    with pytest.raises(BadInputError, match="--precision 'fp8' is not one of 32, 16-mixed, bf16-mixed"):
        fingerprint_dataset(task_folder, spec=spec, progress=False, backbone=backbone, draws=Draws(samples=8,
                                                                                                   precision="fp8"))


def test_merged_shards_equal_the_whole(task_folder, tmp_path, backbone):
    draws = Draws(samples=40, batch_size=8, seed=2, workers=0)
    whole = fingerprint_dataset(task_folder, draws=draws, backbone=backbone, progress=False)
    shards = [fingerprint_dataset(task_folder, draws=replace(draws, shard=f"{i}/3"), backbone=backbone,
                                  progress=False) for i in (1, 2, 3)]
    assert [s.num_draws for s in shards] == [16, 16, 8] and shards[1].extra["shard"] == "2/3"
    paths = [s.save(tmp_path / f"s{i}.npz") for i, s in enumerate(shards)]
    result = CliRunner().invoke(main, ["merge", *map(str, paths), "--out", str(tmp_path / "merged.npz")])
    assert result.exit_code == 0, result.output
    merged = Fingerprint.load(tmp_path / "merged.npz")
    for variant in whole.variants:
        np.testing.assert_array_equal(merged.counts[variant], whole.counts[variant])
    np.testing.assert_allclose(merged.feature_sum, whole.feature_sum, rtol=1e-12)
    assert merged.num_draws == whole.num_draws and "shard" not in merged.extra
    np.testing.assert_array_equal(merge(*shards).counts["small"], whole.counts["small"])


@pytest.mark.slow
def test_nearest_task_is_from_its_own_family(tmp_path, backbone):
    tasks = demo_suite(3, num_images=24, image_size=64, seed=11)
    fingerprints = [Task.from_fingerprint(fingerprint_dataset(t.write(tmp_path / t.name), backbone=backbone,
                                                              progress=False, draws=Draws(samples=64, batch_size=32,
                                                                                          workers=0, seed=i)))
                    for i, t in enumerate(tasks)]
    hits = [rank_sources("bkld-small-target", target, fingerprints, top_k=1)[0].name.rsplit("_", 1)[0]
            == target.name.rsplit("_", 1)[0] for target in fingerprints]
    assert np.mean(hits) >= 0.9, [(t.name, h) for t, h in zip(fingerprints, hits)]


# -- formats ------------------------------------------------------------------------------------------------------

def _dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", window=None, slope=1.0, intercept=0.0):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_image_formats_decode_to_rgb_uint8(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))          # 12-bit data in 16 bits
    Image.fromarray(ramp).save(tmp_path / "a16.png")
    Image.fromarray(ramp).save(tmp_path / "a16.tif")
    Image.fromarray((ramp // 16).astype(np.uint8)).save(tmp_path / "grey.bmp")
    rgba = np.zeros((8, 64, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[:, :32, 3] = 0                                                       # left half transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "c.jpg", quality=95)
    for name, top in (("a16.png", 255), ("a16.tif", 255), ("grey.bmp", 252)):   # 16-bit is stretched, 8-bit kept
        image = load_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == (8, 64, 3), name
        assert image[0, 0, 0] == 0 and image[0, -1, 0] == top and (image[..., 0] == image[..., 2]).all(), name
    rgba_image = load_image(tmp_path / "rgba.png")
    assert (rgba_image[:, :32] == 0).all() and (rgba_image[:, 32:, 0] == 200).all()
    assert abs(int(load_image(tmp_path / "c.jpg")[4, 4, 0]) - 90) <= 2


def test_dicom_applies_rescale_window_and_monochrome1(tmp_path):
    pixels = np.tile(np.arange(0, 1000, 10, dtype=np.uint16), (4, 1))        # 0..990
    plain = load_image(_dicom(tmp_path / "plain.dcm", pixels))
    assert plain[0, 0, 0] == 0 and plain[0, -1, 0] == 255
    inverted = load_image(_dicom(tmp_path / "inv.dcm", pixels, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(inverted, 255 - plain)
    windowed = load_image(_dicom(tmp_path / "win.dcm", pixels, window=(300, 200), slope=2.0, intercept=-100))
    values = 2.0 * pixels[0] - 100                                             # modality LUT
    assert (windowed[0][values <= 200] == 0).all() and (windowed[0][values >= 400] == 255).all()


# -- the bad-input catalogue: one line, no partial output ---------------------------------------------------------

def _huge_png(path: Path) -> Path:
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    raw = bytearray(path.read_bytes())
    struct.pack_into(">II", raw, 16, 40000, 40000)                            # IHDR width, height
    struct.pack_into(">I", raw, 29, zlib.crc32(bytes(raw[12:29])))
    path.write_bytes(bytes(raw))
    return path


@pytest.fixture
def bad_datasets(tmp_path):
    def folder(name, files):
        root = tmp_path / name
        for relative, content in files.items():
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, np.ndarray):
                Image.fromarray(content).save(target)
            else:
                target.write_bytes(content)
        root.mkdir(exist_ok=True)
        return root

    ok = np.full((16, 16, 3), 120, np.uint8)
    good = {"a/1.png": ok, "a/2.png": ok, "b/1.png": ok, "b/2.png": ok}
    huge = folder("huge", dict(good))
    _huge_png(huge / "b" / "3.png")
    manifest = tmp_path / "nolabel.csv"
    manifest.write_text("path,class\na/1.png,a\n")
    missing_rows = folder("listed", dict(good))
    (missing_rows / "list.csv").write_text("path,label\na/1.png,a\na/2.png,a\nb/1.png,b\nb/gone.png,b\n")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,label\na/1.png,caf\xe9\n".encode("latin-1"))
    return {
        "manifest with a non-UTF-8 byte": (latin, "not UTF-8"),
        "corrupt file": (folder("corrupt", {**good, "b/bad.png": b"\x89PNG\r\n\x1a\n garbage"}), "bad.png"),
        "empty folder": (folder("empty", {}), "holds no images"),
        "one class": (folder("oneclass", {"a/1.png": ok, "a/2.png": ok}), "needs at least 2"),
        "non-image files only": (folder("text", {"a/x.txt": b"x", "b/y.csv": b"y"}), "2 other files were ignored"),
        "huge image": (huge, "megapixel limit"),
        "unreadable DICOM": (folder("dicom", {**good, "b/scan.dcm": b"not a dicom at all" * 10}), "scan.dcm"),
        "missing label column": (manifest, "no 'label' column"),
        "manifest naming a missing file": (missing_rows / "list.csv", "names 1 files that do not exist, the first "
                                                                      "'b/gone.png' on line 5"),
        "a readme beside no class folders": (folder("readme", {"readme.txt": b"x"}), "; 1 other files were ignored"),
        "images without class folders": (folder("flat", {"1.png": ok}), "no class folders"),
        "missing dataset": (tmp_path / "nope", "does not exist"),
    }


def test_bad_datasets_fail_with_one_line_and_leave_no_file(bad_datasets, tmp_path):
    runner = CliRunner()
    for case, (data, why) in bad_datasets.items():
        out = tmp_path / "out" / f"{case.replace(' ', '_')}.npz"
        result = runner.invoke(main, ["fingerprint", str(data), "--out", str(out), "--samples", "64",
                                      "--batch-size", "8", "--workers", "0"])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, (case, result.output)
        assert len(lines) >= 1 and lines[-1].startswith("error:") and why in lines[-1], (case, result.output)
        assert "Traceback" not in result.output
        assert not out.exists() and not list(out.parent.glob("*.partial")) if out.parent.exists() else True


def test_skip_unreadable_skips_and_reports(bad_datasets, tmp_path):
    data, _ = bad_datasets["corrupt file"]
    out = tmp_path / "skipped.npz"
    result = CliRunner().invoke(main, ["fingerprint", str(data), "--out", str(out), "--samples", "40",
                                       "--batch-size", "8", "--workers", "0", "--skip-unreadable"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable images" in result.output
    fp = Fingerprint.load(out)
    assert fp.extra["skipped_unreadable"] == 1 and 0 < fp.num_draws < 40
    assert fp.num_images == 4 and fp.class_counts == {"a": 2, "b": 2}


def test_manifest_with_split_column(tmp_path, backbone):
    folder = DemoTask("m", "natural", num_classes=3, num_images=9, image_size=40, seed=2).write(tmp_path / "m")
    rows = ["path,label,split"] + [f"{p.relative_to(tmp_path)},{p.parent.name},{'train' if i % 3 else 'test'}"
                                   for i, p in enumerate(sorted(folder.rglob("*.png")))]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    dataset = open_dataset(tmp_path / "manifest.csv")
    assert len(dataset) == 6 and all(p.is_file() for p in dataset.paths)
    with pytest.raises(BadInputError, match="no 'path' column"):
        (tmp_path / "bad.csv").write_text("file,label\n")
        open_dataset(tmp_path / "bad.csv")


@pytest.mark.parametrize("level", [0, 1, 2])
def test_offline_lite_weights_fill_every_timm_tensor(level):
    import timm
    import torch
    from safetensors.torch import load_file

    from tfp_mlflow.extract.backbones import _lite_locator

    state = load_file(str(_lite_locator(level)()))
    expected = timm.create_model(f"tf_efficientnet_lite{level}", pretrained=False).state_dict()
    assert set(state) == set(expected)
    assert all(state[k].shape == expected[k].shape for k in expected)
    assert all(torch.isfinite(t.float()).all() for t in state.values())

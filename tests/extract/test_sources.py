"""Datasets where they live, read through the real `medmnist` and `datasets` libraries from small files built here
in each library's own on-disk format (nothing is mocked, nothing unpickled)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from tfp_mlflow import BadInputError
from tfp_mlflow.cli import main
from tfp_mlflow.extract import open_dataset
from tfp_mlflow.train.data import split_task

pytestmark = pytest.mark.torch


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """An empty cache and a MedMNIST root holding DermaMNIST+ (64 px) and ChestMNIST (28 px) in MedMNIST's layout:
    ``{flag}[_{size}].npz`` with ``{split}_images`` and ``{split}_labels`` arrays."""
    root = tmp_path / "medmnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    splits = {"train": 14, "val": 4, "test": 4}
    derma = {}
    for split, n in splits.items():
        derma[f"{split}_images"] = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
        derma[f"{split}_labels"] = (np.arange(n) % 3)[:, None].astype(np.uint8)
    np.savez_compressed(root / "dermamnist_64.npz", **derma)
    chest = {}
    for split, n in splits.items():
        chest[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.zeros((n, 14), dtype=np.uint8)
        labels[::2, 2] = 1                                               # effusion in every other image
        chest[f"{split}_labels"] = labels
    np.savez_compressed(root / "chestmnist.npz", **chest)
    monkeypatch.setenv("TFP_DATA_ROOT", str(root))
    monkeypatch.setenv("TFP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_medmnist_is_read_through_the_library_with_its_splits_and_class_names(roots):
    import medmnist

    train = open_dataset("medmnist:dermamnist@64")
    assert len(train) == 14 and train.name == "dermamnist_64"
    names = medmnist.INFO["dermamnist"]["label"]
    assert set(train.classes) == {names["0"], names["1"], names["2"]}
    split = split_task("medmnist:dermamnist@64")                      # the val split is the held-out split
    assert len(split.train) == 14 and len(split.val) == 4
    again = open_dataset("medmnist:dermamnist@64")                    # materialised once, then read from the cache
    assert again.paths == train.paths


def test_a_multi_label_medmnist_dataset_is_one_binary_task_per_label(roots):
    task = open_dataset("medmnist:chestmnist/effusion")
    assert task.class_counts == {"effusion": 7, "no effusion": 7} and task.name == "chestmnist_effusion"
    with pytest.raises(BadInputError, match=r"multi-label \(14 labels\).*medmnist:chestmnist@28/atelectasis"):
        open_dataset("medmnist:chestmnist")


@pytest.mark.parametrize("source, why", [
    ("medmnist:nosuchmnist", "has no dataset 'nosuchmnist'; the 2-D ones are"),
    ("medmnist:organmnist3d", "3-D volume"),
    ("medmnist:dermamnist@100", "sizes 28, 64, 128, 224"),
    ("medmnist:pathmnist@64", "cannot be downloaded here"),          # not in the root, and no network
    ("medmnist:chestmnist/kidney", "no label 'kidney'"),
    ("medmnist:derma mnist", "not a MedMNIST source"),
    ("hf:nobody/nothing-here", "cannot be loaded"),
])
def test_bad_sources_fail_in_one_line(roots, source, why):
    result = CliRunner().invoke(main, ["fingerprint", source, "--out", str(roots / "x.npz"), "--samples", "8"])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error:") and why in line and "Traceback" not in result.output, result.output


def _hf_dataset(n: int = 12, label_feature=None):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"img": datasets.Image(),
                                  "fine_label": label_feature or datasets.ClassLabel(names=["benign", "malignant"])})
    return datasets.Dataset.from_dict({"img": images, "fine_label": [i % 2 for i in range(n)]}, features=features)


def test_a_saved_hugging_face_dataset_and_local_parquet_files_are_read_through_datasets(roots):
    import datasets

    saved = roots / "saved"
    datasets.DatasetDict({"train": _hf_dataset(12), "validation": _hf_dataset(4)}).save_to_disk(str(saved))
    task = split_task(saved)
    assert task.classes == ("benign", "malignant") and len(task.train) == 12 and len(task.val) == 4
    parquet = roots / "parquet"
    parquet.mkdir()
    _hf_dataset(10).to_parquet(str(parquet / "train.parquet"))
    from_files = open_dataset(f"hf:{parquet}@train")
    assert len(from_files) == 10 and from_files.classes == ["benign", "malignant"]


def test_hugging_face_columns_are_found_or_named_and_wrong_ones_refused(roots):
    import datasets

    plain = roots / "plain"
    _hf_dataset(6, datasets.Value("float32")).save_to_disk(str(plain))
    with pytest.raises(BadInputError, match=r"no label column found \(columns: img, fine_label\)"):
        open_dataset(plain)
    floats = roots / "floats"
    floats.mkdir()
    _hf_dataset(6, datasets.Value("float32")).to_parquet(str(floats / "train.parquet"))
    with pytest.raises(BadInputError, match="column 'fine_label' is Value.*not a class label"):
        open_dataset(f"hf:{floats}?label=fine_label")
    parquet = roots / "named"
    parquet.mkdir()
    _hf_dataset(6).to_parquet(str(parquet / "train.parquet"))
    with pytest.raises(BadInputError, match="no image column named 'picture'"):
        open_dataset(f"hf:{parquet}@train?image=picture")
    with pytest.raises(BadInputError, match="unknown option 'colour'"):
        open_dataset(f"hf:{parquet}?colour=red")


def test_tfp_fingerprint_reads_medmnist_end_to_end(roots, monkeypatch):
    out = roots / "derma.npz"
    monkeypatch.delenv("TFP_DATA_ROOT")                                # given on the command line instead
    result = CliRunner().invoke(main, ["fingerprint", "medmnist:dermamnist@64", "--out", str(out), "--samples", "16",
                                       "--batch-size", "8", "--workers", "0", "--data-root", str(roots / "medmnist")])
    assert result.exit_code == 0, result.output
    assert "TFP_DATA_ROOT" not in os.environ                           # an argument, not a change to the process
    from tfp_mlflow import Fingerprint

    fingerprint = Fingerprint.load(out)
    assert fingerprint.name == "dermamnist_64" and fingerprint.num_images == 14 and fingerprint.num_classes == 3


def test_columns_are_named_on_the_command_line(roots):
    """A saved dataset whose columns tfp cannot guess: --image-column/--label-column name them; without them, and
    for data that has no columns, one line says what to do."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(2)
    pictures = [Image.fromarray(rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)) for _ in range(8)]
    saved = roots / "lesions"
    datasets.Dataset.from_dict({"picture": pictures, "thumbnail": pictures, "diagnosis": ["nevus", "melanoma"] * 4},
                               features=datasets.Features({"picture": datasets.Image(), "thumbnail": datasets.Image(),
                                                           "diagnosis": datasets.Value("string")})
                               ).save_to_disk(str(saved))
    args = ["fingerprint", str(saved), "--out", str(roots / "lesions.npz"), "--samples", "8", "--batch-size", "8",
            "--workers", "0"]
    guessed = CliRunner().invoke(main, args)
    assert guessed.exit_code == 2 and "no label column found" in guessed.output and "\n" not in \
        guessed.output.strip()
    named = CliRunner().invoke(main, [*args, "--image-column", "thumbnail", "--label-column", "diagnosis"])
    assert named.exit_code == 0, named.output
    from tfp_mlflow import Fingerprint

    fingerprint = Fingerprint.load(roots / "lesions.npz")
    assert fingerprint.num_images == 8 and fingerprint.num_classes == 2
    folder = roots / "folder"
    (folder / "a").mkdir(parents=True)
    refused = CliRunner().invoke(main, ["fingerprint", str(folder), "--out", str(roots / "x.npz"),
                                        "--image-column", "x"])
    assert refused.exit_code == 2 and "name columns of a Hugging Face dataset" in refused.output

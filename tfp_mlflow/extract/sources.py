"""Datasets where they live: MedMNIST+ (``medmnist:NAME[@SIZE][/LABEL]``) and the Hugging Face Hub
(``hf:ORG/NAME[:CONFIG][@SPLIT][?image=COLUMN&label=COLUMN]``, or a folder a ``datasets`` object was saved to).

Each is read once through its own library (``medmnist``'s dataset classes on its ``.npz`` files, ``datasets``'
``load_dataset``/``load_from_disk``), and written to the local cache as PNG files with a CSV manifest
(``path,label,split``), which every command reads like any other manifest: fingerprinting, training, tuning,
``rank-models`` and the recipes need nothing else. Splits keep their names (``validation`` becomes ``val``), so the
held-out rules of training apply. A multi-label MedMNIST dataset (ChestMNIST) is one binary task per label.

Where the network allows, the library downloads; otherwise MedMNIST files are read from ``$TFP_DATA_ROOT``
(default: MedMNIST's own ``~/.medmnist``) and Hub datasets from the Hub's cache or a local path. Nothing is
unpickled: MedMNIST's ``.npz`` files are read with ``allow_pickle=False``, Hub datasets are Arrow and Parquet.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np

from tfp_mlflow._paths import default_cache_dir
from tfp_mlflow.errors import BadInputError, first_line

__all__ = ["resolve_source", "is_library_source", "with_columns", "MEDMNIST_SIZES"]

MEDMNIST_SIZES = (28, 64, 128, 224)
_SPLITS = {"train": "train", "training": "train", "validation": "val", "valid": "val", "val": "val", "dev": "val",
           "test": "test", "testing": "test"}


def is_library_source(source) -> bool:
    """Whether ``source`` names a dataset of a library rather than a folder or manifest of files."""
    text = str(source)
    return text.startswith(("medmnist:", "hf:")) or _saved_dataset(Path(text.partition("?")[0])) is not None


def resolve_source(source, data_root: str | os.PathLike | None = None):
    """A manifest path for a library dataset (materialised in the cache on first use); anything else unchanged.

    ``data_root`` is where MedMNIST files are read from and downloaded to on that first use (default:
    ``$TFP_DATA_ROOT``, else MedMNIST's own ``~/.medmnist``); later uses read the cached copy."""
    text = str(source)
    if text.startswith("medmnist:"):
        return _medmnist(text, data_root)
    if text.startswith("hf:"):
        return _huggingface(text)
    if _saved_dataset(Path(text.partition("?")[0])) is not None:
        return _huggingface(text, saved=Path(text.partition("?")[0]))
    return source


def with_columns(source, image: str | None = None, label: str | None = None) -> str:
    """``source`` with its image and label columns named (``--image-column``/``--label-column``): a Hugging Face
    dataset (``hf:...`` or a saved folder) gets ``?image=...&label=...``; other data has no columns to name."""
    if not image and not label:
        return str(source)
    text = str(source)
    if not (text.startswith("hf:") or (is_library_source(text) and not text.startswith("medmnist:"))):
        raise BadInputError(f"--image-column/--label-column name columns of a Hugging Face dataset (hf:... or a "
                            f"folder saved with save_to_disk); {text!r} is not one")
    body, _, query = text.partition("?")
    options = dict(urllib.parse.parse_qsl(query))
    options.update({key: value for key, value in (("image", image), ("label", label)) if value})
    return f"{body}?{urllib.parse.urlencode(options)}"


# -- MedMNIST+ ----------------------------------------------------------------------------------------------------

def _medmnist(source: str, data_root: str | os.PathLike | None = None) -> Path:
    match = re.fullmatch(r"medmnist:([a-z0-9]+)(?:@(\d+))?(?:/([a-z_ ]+))?", source.strip().lower())
    if not match:
        raise BadInputError(f"{source!r} is not a MedMNIST source; write medmnist:NAME[@SIZE][/LABEL], e.g. "
                            f"medmnist:dermamnist@224 or medmnist:chestmnist@64/effusion")
    name, size, label = match.group(1), int(match.group(2) or 28), match.group(3)
    try:
        import medmnist
    except ImportError:
        raise BadInputError("MedMNIST sources need the medmnist package: pip install 'tfp-mlflow[data]'") from None
    info = medmnist.INFO.get(name)
    if info is None:
        two_d = sorted(k for k in medmnist.INFO if not k.endswith("3d"))
        raise BadInputError(f"MedMNIST has no dataset {name!r}; the 2-D ones are {', '.join(two_d)}")
    if name.endswith("3d"):
        raise BadInputError(f"{name} is a 3-D volume dataset; tfp fingerprints 2-D images (use a 2-D MedMNIST set)")
    if size not in MEDMNIST_SIZES:
        raise BadInputError(f"MedMNIST+ comes in sizes {', '.join(map(str, MEDMNIST_SIZES))}, not {size}")
    labels = {int(k): v for k, v in info["label"].items()}
    multi_label = info["task"].startswith("multi-label")
    chosen = None
    if multi_label:
        names = [v.replace(" ", "_") for _, v in sorted(labels.items())]
        if label is None:
            raise BadInputError(f"{name} is multi-label ({len(names)} labels): choose one binary task, e.g. "
                                f"medmnist:{name}@{size}/{names[0]} (labels: {', '.join(names)})")
        if label.replace(" ", "_") not in names:
            raise BadInputError(f"{name} has no label {label!r}; its labels are {', '.join(names)}")
        chosen = names.index(label.replace(" ", "_"))
    elif label is not None:
        raise BadInputError(f"{name} is {info['task']}, one task: drop /{label}")
    task = f"{name}{'' if size == 28 else f'_{size}'}{'' if chosen is None else f'_{label}'}"
    folder = default_cache_dir() / "datasets" / "medmnist" / task
    if (folder / f"{task}.csv").is_file():
        return folder / f"{task}.csv"
    root = Path(data_root or os.environ.get("TFP_DATA_ROOT") or medmnist.dataset.DEFAULT_ROOT).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    file = root / f"{name}{'' if size == 28 else f'_{size}'}.npz"
    cls = getattr(medmnist, info["python_class"])
    if not file.is_file():
        try:
            cls(split="train", download=True, root=str(root), size=size)
        except Exception as exc:
            raise BadInputError(f"MedMNIST file {file.name} is not in {root} and cannot be downloaded here "
                                f"({type(exc).__name__}); download {info.get('url' if size == 28 else f'url_{size}')}"
                                f" into {root} (or set TFP_DATA_ROOT)") from None

    def rows():
        for split in ("train", "val", "test"):
            try:
                data = cls(split=split, download=False, root=str(root), size=size)
            except Exception as exc:
                raise BadInputError(f"MedMNIST file {file} cannot be read ({type(exc).__name__}: "
                                    f"{str(exc)[:120]}); download it again") from None
            images, targets = np.asarray(data.imgs), np.asarray(data.labels)
            for image, target in zip(images, targets):
                target = np.atleast_1d(target)
                if chosen is None:
                    text = labels.get(int(target[0]), str(int(target[0])))
                else:
                    text = label if int(target[chosen]) else f"no {label}"
                yield image, text, split
    total = sum(info["n_samples"].values())
    return _materialise(folder, task, rows(), f"MedMNIST {task} ({info.get('license', '')})", total)


# -- Hugging Face ---------------------------------------------------------------------------------------------------

def _saved_dataset(path: Path) -> Path | None:
    """``path`` when it is a folder ``datasets`` saved a Dataset or DatasetDict to, else ``None``."""
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            return path
    except OSError:
        return None
    return None


def _huggingface(source: str, saved: Path | None = None) -> Path:
    try:
        import datasets
    except ImportError:
        raise BadInputError("Hugging Face sources need the datasets package: pip install 'tfp-mlflow[data]'") \
            from None
    body, _, query = (source if saved is not None else source[3:]).partition("?")
    options = dict(urllib.parse.parse_qsl(query))
    unknown = set(options) - {"image", "label"}
    if unknown:
        raise BadInputError(f"{source!r}: unknown option {sorted(unknown)[0]!r}; use ?image=COLUMN&label=COLUMN")
    if saved is not None:
        path, config, split = str(saved), None, None
        task = saved.name
    else:
        body, _, split = body.partition("@")
        path, _, config = body.rpartition(":") if ":" in body.split("/")[-1] else (body, "", "")
        path = path or body
        if not path:
            raise BadInputError(f"{source!r} names no dataset; write hf:ORG/NAME[:CONFIG][@SPLIT]")
        task = re.sub(r"[^A-Za-z0-9_.+-]+", "_", "_".join(p for p in (Path(path).name, config, split) if p))
        config, split = config or None, split or None
    folder = default_cache_dir() / "datasets" / "hf" / re.sub(r"[^A-Za-z0-9_.+-]+", "_", source)[:120]
    task = (task or "hf_dataset").strip("_.") or "hf_dataset"
    if (folder / f"{task}.csv").is_file():
        return folder / f"{task}.csv"
    try:
        if saved is not None:
            loaded = datasets.load_from_disk(str(saved))
        else:
            loaded = datasets.load_dataset(path, config, split=split)
    except Exception as exc:
        where = str(saved) if saved is not None else path
        raise BadInputError(f"dataset {where!r} cannot be loaded ({type(exc).__name__}: "
                            f"{first_line(exc)}); check the name, or with no "
                            f"network give a local copy (a folder saved with save_to_disk, or parquet files)") \
            from None
    parts = dict(loaded.items()) if isinstance(loaded, datasets.DatasetDict) else {split or "train": loaded}
    first = next(iter(parts.values()))
    image_column, label_column, names = _columns(first, options, source)

    def rows():
        for split_name, part in parts.items():
            mapped = _SPLITS.get(split_name.lower(), split_name)
            for record in part:
                image, value = record[image_column], record[label_column]
                if isinstance(value, (list, dict, float)) or value is None:
                    raise BadInputError(f"{source}: column {label_column!r} holds {type(value).__name__} labels; "
                                        f"a class label is an integer or a string (choose one with ?label=COLUMN)")
                yield np.asarray(image.convert("RGB")), (names[value] if names else str(value)), mapped
    return _materialise(folder, task, rows(), source, sum(len(p) for p in parts.values()))


def _columns(dataset, options: dict[str, str], source: str) -> tuple[str, str, list[str] | None]:
    import datasets

    features = dataset.features
    image = options.get("image") or next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
    if image is None or image not in features:
        raise BadInputError(f"{source}: no image column {'named ' + repr(image) if image else 'found'} (columns: "
                            f"{', '.join(features)}); name it with ?image=COLUMN")
    label = options.get("label") or next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)),
                                         None) or next((k for k in ("label", "labels") if k in features), None)
    if label is None or label not in features:
        raise BadInputError(f"{source}: no label column {'named ' + repr(label) if label else 'found'} (columns: "
                            f"{', '.join(features)}); name it with ?label=COLUMN")
    feature = features[label]
    if isinstance(feature, datasets.ClassLabel):
        return image, label, list(feature.names)
    if not isinstance(feature, datasets.Value) or not (feature.dtype.startswith("int") or feature.dtype == "string"):
        raise BadInputError(f"{source}: column {label!r} is {feature}, not a class label (integers or strings)")
    return image, label, None


# -- writing --------------------------------------------------------------------------------------------------------

def _materialise(folder: Path, task: str, rows, what: str, total: int | None = None) -> Path:
    """Write ``(image array, label, split)`` rows as PNGs plus ``task.csv`` into ``folder``, whole or not at all."""
    from PIL import Image
    from rich.console import Console

    from tfp_mlflow.progress import Progress

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        with open(staging / f"{task}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "split"])
            with Progress(console=Console(stderr=True)) as bar:
                job = bar.add_task(f"writing {what} to the cache, once", total=total)
                for number, (image, label, split) in enumerate(rows):
                    image = np.asarray(image)
                    if image.dtype != np.uint8 or image.ndim not in (2, 3):
                        raise BadInputError(f"{what}: image {number} is {image.dtype} of shape {image.shape}, not "
                                            f"an 8-bit picture")
                    relative = Path(split) / f"{number:07d}.png"
                    (staging / split).mkdir(exist_ok=True)
                    Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image).save(
                        staging / relative)
                    writer.writerow([relative.as_posix(), label, split])
                    bar.advance(job)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder / f"{task}.csv"

"""Labelled image datasets as researchers have them: a folder per class, or a CSV manifest; images to RGB uint8.

Formats: PNG, JPEG, BMP, TIFF (8- and 16-bit, greyscale, RGBA) and DICOM (through pydicom: rescale
slope/intercept, the first VOI window when present, MONOCHROME1 inverted, first frame of multi-frame files).
Images deeper than 8 bits are scaled by their own value range; greyscale is repeated to RGB, as the paper did.
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfp_mlflow.errors import BadInputError

__all__ = ["ImageDataset", "open_dataset", "load_image", "IMAGE_SUFFIXES", "MAX_PIXELS"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})
#: Larger images are refused (downscale them first): 100 megapixels.
MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image-classification dataset on disk.

    Attributes
    ----------
    root : Path
        The folder or CSV it was read from.
    paths : tuple of Path
    labels : tuple of str
        One label per path.
    ignored : int
        Files skipped because their suffix is not an image format.
    """

    root: Path
    paths: tuple[Path, ...]
    labels: tuple[str, ...]
    ignored: int = 0
    name: str = field(default="")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def classes(self) -> list[str]:
        """Sorted class labels."""
        return sorted(set(self.labels))

    @property
    def class_counts(self) -> dict[str, int]:
        """Images per class label, in sorted label order."""
        counts = Counter(self.labels)
        return {label: counts[label] for label in self.classes}

    def without(self, unreadable: set[int]) -> ImageDataset:
        """The dataset minus the images at the given indices."""
        keep = [i for i in range(len(self)) if i not in unreadable]
        return ImageDataset(self.root, tuple(self.paths[i] for i in keep), tuple(self.labels[i] for i in keep),
                            self.ignored, self.name)


def open_dataset(source: str | os.PathLike, *, split: str | None = "train", min_classes: int = 2) -> ImageDataset:
    """Read a dataset from a class-folder tree, a CSV manifest (``path,label[,split]``), or a library's dataset
    (``medmnist:NAME[@SIZE]``, ``hf:ORG/NAME[:CONFIG][@SPLIT]``, a folder ``datasets`` saved: see
    :mod:`tfp_mlflow.extract.sources`).

    With a manifest that has a ``split`` column, only rows of ``split`` are used (all rows when ``split`` is
    ``None``). Raises :class:`~tfp_mlflow.errors.BadInputError` before any work for an empty dataset, a missing
    label column or fewer than ``min_classes`` classes.
    """
    from tfp_mlflow.extract.sources import resolve_source

    root = Path(resolve_source(source))   # medmnist:..., hf:... and saved datasets: a manifest in the cache
    if root.is_dir():
        dataset = _from_folder(root)
    elif root.is_file() and root.suffix.lower() == ".csv":
        dataset = _from_manifest(root, split)
    elif root.exists():
        raise BadInputError(f"{str(root)!r} is neither a folder of class folders nor a .csv manifest")
    else:
        raise BadInputError(f"dataset {str(root)!r} does not exist")
    if len(dataset) == 0:
        raise BadInputError(f"dataset {str(root)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                            + (f"; {dataset.ignored} other files were ignored" if dataset.ignored else ""))
    if len(dataset.classes) < min_classes:
        raise BadInputError(f"dataset {str(root)!r} has {len(dataset.classes)} class ({', '.join(dataset.classes)}); "
                            f"a classification task needs at least {min_classes}")
    return dataset


def _from_folder(root: Path) -> ImageDataset:
    paths, labels = [], []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    ignored = sum(1 for p in root.iterdir() if p.is_file() and not p.name.startswith("."))   # a readme beside
    if not class_dirs and any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()):
        raise BadInputError(f"{str(root)!r} holds images but no class folders; put each class's images in a "
                            f"sub-folder named after the class, or give a CSV manifest")
    for class_dir in class_dirs:
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(class_dir.name)
            else:
                ignored += 1
    return ImageDataset(root, tuple(paths), tuple(labels), ignored, root.name)


def _from_manifest(manifest: Path, split: str | None) -> ImageDataset:
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            for required in ("path", "label"):
                if required not in columns:
                    raise BadInputError(f"manifest {str(manifest)!r} has no {required!r} column (columns: "
                                        f"{', '.join(columns) or 'none'}); it needs path,label[,split]")
            rows = [{k.strip().lower(): (v if isinstance(v, str) else "").strip() for k, v in row.items()
                     if isinstance(k, str)} for row in reader]
    except UnicodeDecodeError as exc:
        raise BadInputError(f"manifest {str(manifest)!r} is not UTF-8 text (byte {exc.start}); save it as "
                            f"UTF-8") from None
    except csv.Error as exc:
        raise BadInputError(f"manifest {str(manifest)!r} is not a readable CSV ({exc})") from None
    if split is not None and "split" in columns:
        rows = [row for row in rows if row.get("split") == split]
    paths, labels = [], []
    for number, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            raise BadInputError(f"manifest {str(manifest)!r} line {number} lacks a path or a label")
        path = (manifest.parent / row["path"]).resolve()
        paths.append(path)
        labels.append(row["label"])
    # Checked before any image is drawn: a missing file found at 64 % of the draws costs minutes.
    missing = [(number, row["path"]) for number, (row, path) in enumerate(zip(rows, paths), start=2)
               if not path.is_file()]
    if missing:
        number, name = missing[0]
        raise BadInputError(f"manifest {str(manifest)!r} names {len(missing):,} files that do not exist, the first "
                            f"{name!r} on line {number}; paths are relative to the manifest's folder")
    return ImageDataset(manifest, tuple(paths), tuple(labels), 0, manifest.stem)


def load_image(path: str | os.PathLike, min_side: int | None = None) -> np.ndarray:
    """Decode one image to an RGB uint8 array of shape (H, W, 3); a one-line error names the file.

    ``min_side`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale (its DCT scaling) while both sides stay at least
    ``min_side``: a large photograph then decodes several times faster when it is resized down anyway.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".dcm", ".dicom"):
            return _load_dicom(path)
        return _load_pil(path, min_side)
    except BadInputError:
        raise
    except Exception as exc:  # decoders raise anything from OSError to SyntaxError on corrupt files
        raise BadInputError(f"image {str(path)!r} cannot be read ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120] if str(exc) else 'corrupt'}); fix or remove it, or "
                            f"pass --skip-unreadable") from None


def _check_size(path: Path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise BadInputError(f"image {str(path)!r} is {width}x{height} pixels, above the {MAX_PIXELS // 10**6} "
                            f"megapixel limit; downscale it first")
    if width < 1 or height < 1:
        raise BadInputError(f"image {str(path)!r} is empty ({width}x{height})")


def _load_pil(path: Path, min_side: int | None = None) -> np.ndarray:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # our own limit applies, with a clearer message
    with Image.open(path) as image:
        _check_size(path, *image.size)
        image.seek(0)
        if min_side and image.format == "JPEG":
            image.draft(image.mode, (min_side, min_side))
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            return _to_rgb(_stretch(np.asarray(image, dtype=np.float64)))
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # Composite on black: transparent regions carry no image content.
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
            return (rgba[..., :3] * (rgba[..., 3:] / 255.0)).round().astype(np.uint8)
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _load_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    dataset = pydicom.dcmread(path)
    if "PixelData" not in dataset:
        raise BadInputError(f"DICOM file {str(path)!r} holds no pixel data")
    _check_size(path, int(dataset.get("Columns", 0)), int(dataset.get("Rows", 0)))
    pixels = dataset.pixel_array
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if int(dataset.get("SamplesPerPixel", 1)) == 3:
        return _to_rgb(_stretch(pixels.astype(np.float64)) if pixels.dtype != np.uint8 else pixels)
    values = apply_modality_lut(pixels, dataset)
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        values = apply_voi_lut(values, dataset, index=0)
    values = _stretch(np.asarray(values, dtype=np.float64))
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        values = 255 - values
    return _to_rgb(values)


def _stretch(values: np.ndarray) -> np.ndarray:
    """Scale to 0..255 by the image's own range (a constant image becomes black)."""
    values = np.nan_to_num(values)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _to_rgb(values: np.ndarray) -> np.ndarray:
    if values.ndim == 2:
        return np.repeat(values[:, :, None], 3, axis=2)
    if values.ndim == 3 and values.shape[2] == 3:
        return np.ascontiguousarray(values)
    if values.ndim == 3 and values.shape[2] == 4:
        return np.ascontiguousarray(values[:, :, :3])
    raise BadInputError(f"unsupported pixel layout {values.shape}")

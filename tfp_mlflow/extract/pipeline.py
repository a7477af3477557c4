"""Images → frozen backbone → binned fingerprint (docs/method.md §2), streaming and deterministic.

The draw plan (which image, crop offset, flip) is fixed up front from the seed, so the result does not depend on
the number of workers, and shards (contiguous runs of whole batches) merge into exactly the fingerprint of the
whole. Draws are ordered by image and a worker keeps its last few resized images, so an image drawn k times is
decoded once.
"""
from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tfp_mlflow.builder import FingerprintBuilder
from tfp_mlflow.errors import BadInputError, SpecMismatchError
from tfp_mlflow.extract.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from tfp_mlflow.extract.datasets import ImageDataset, load_image, open_dataset
from tfp_mlflow.fingerprint import Fingerprint, task_name_from
from tfp_mlflow.spec import FingerprintSpec, default_spec

__all__ = ["Draws", "DrawPlan", "plan_draws", "parse_shard", "iter_features", "fingerprint_dataset", "create_spec",
           "default_device", "PRECISIONS"]

CACHE_IMAGES = 32  # draws are ordered by image, so a short memory of resized images catches the repeats


@dataclass(frozen=True)
class DrawPlan:
    """``n`` draws with replacement: image index, crop offset (y, x) and horizontal flip of each."""

    image_index: np.ndarray
    offsets: np.ndarray
    flips: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.image_index)


def plan_draws(num_images: int, samples: int, seed: int, resize: int, crop: int) -> DrawPlan:
    """Seeded draw plan, ordered by image index; the same arguments always give the same plan."""
    if samples < 1:
        raise BadInputError(f"--samples must be at least 1, got {samples}")
    if crop > resize:
        raise BadInputError(f"crop {crop} is larger than the resize {resize}")
    rng = np.random.default_rng(seed)
    image_index = rng.integers(0, num_images, samples)
    offsets = rng.integers(0, resize - crop + 1, size=(samples, 2))
    flips = rng.random(samples) < 0.5
    # Ordered by image, so that the repeats of an image fall in one batch and one worker decodes it once.
    order = np.argsort(image_index, kind="stable")
    return DrawPlan(image_index=image_index[order], offsets=offsets[order], flips=flips[order], seed=seed)


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``"i/N"`` (1 <= i <= N) to ``(i, N)``."""
    if shard is None:
        return None
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise BadInputError(f"--shard must look like i/N (e.g. 2/4), got {shard!r}") from None
    if not 1 <= index <= count:
        raise BadInputError(f"--shard {shard}: i must lie between 1 and N")
    return index, count


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Draws(torch.utils.data.Dataset):
    """Draw ``k`` of a plan as a uint8 tensor (3, crop, crop); a failed decode returns its error text."""

    def __init__(self, paths: Sequence, plan: DrawPlan, draws: np.ndarray, resize: int, crop: int,
                 cache_images: int) -> None:
        self.paths, self.plan, self.draws = list(paths), plan, draws
        self.resize, self.crop, self.cache_images = resize, crop, cache_images
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.draws)

    def _resized(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        from PIL import Image

        image = Image.fromarray(load_image(self.paths[index], min_side=self.resize))
        array = np.asarray(image.resize((self.resize, self.resize), Image.Resampling.BILINEAR))
        self._cache[index] = array
        while len(self._cache) > self.cache_images:
            self._cache.popitem(last=False)
        return array

    def __getitem__(self, position: int):
        draw = int(self.draws[position])
        index = int(self.plan.image_index[draw])
        try:
            array = self._resized(index)
        except BadInputError as exc:
            return torch.zeros(3, self.crop, self.crop, dtype=torch.uint8), index, str(exc)
        y, x = self.plan.offsets[draw]
        patch = array[y:y + self.crop, x:x + self.crop]
        if self.plan.flips[draw]:
            patch = patch[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1))), index, ""


def _shard_draws(samples: int, batch_size: int, shard: tuple[int, int] | None) -> np.ndarray:
    """Indices of the draws a shard computes: a contiguous run of whole batches."""
    draws = np.arange(samples)
    if shard is None:
        return draws
    batches = np.array_split(np.arange(-(-samples // batch_size)), shard[1])[shard[0] - 1]
    if len(batches) == 0:
        return draws[:0]
    return draws[batches[0] * batch_size:min(samples, (batches[-1] + 1) * batch_size)]


def iter_features(dataset: ImageDataset, backbone: Backbone, plan: DrawPlan, *, resize: int = 256,
                  batch_size: int = 64, workers: int | None = None, device: torch.device | None = None,
                  shard: tuple[int, int] | None = None, skip_unreadable: bool = False,
                  on_batch: Callable[[int], None] | None = None, precision: str = "32"
                  ) -> Iterator[tuple[np.ndarray, dict[int, str]]]:
    """Yield ``(features of shape (B, m), unreadable)`` batch by batch for the plan's draws.

    ``unreadable`` maps the index of each image that could not be decoded to its one-line message (its draws are
    left out); without ``skip_unreadable`` the first one raises :class:`~tfp_mlflow.errors.BadInputError`.
    ``precision`` (:data:`PRECISIONS`) runs the forward pass under autocast; features are float32 either way.
    """
    device = device or default_device()
    autocast = _autocast(precision, device)
    if workers is None:
        # A GPU outruns a few decoding processes; on a CPU the workers compete with the forward pass for cores.
        workers = min(8 if device.type == "cuda" else 4, max(0, (os.cpu_count() or 1) - 1))
    draws = _shard_draws(len(plan), batch_size, shard)
    loader = torch.utils.data.DataLoader(
        _Draws(dataset.paths, plan, draws, resize, backbone.input_size, CACHE_IMAGES),
        batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None, persistent_workers=False,
        worker_init_fn=_yield_to_forward if device.type == "cpu" and workers else None)
    mean = torch.tensor(backbone.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(backbone.std, device=device).view(1, 3, 1, 1) * 255.0
    memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    with torch.inference_mode(), autocast:
        for images, indices, messages in loader:
            errors = {int(i): m for i, m in zip(indices, messages) if m}
            if errors and not skip_unreadable:
                raise BadInputError(next(iter(errors.values())))
            if errors:
                images = images[torch.tensor([not m for m in messages])]
            # Layout change on uint8 (a quarter of the bytes), then in-place float ops: same values, half the time.
            images = images.contiguous(memory_format=memory_format).to(device, non_blocking=True).float()
            if len(images):
                images.sub_(mean).div_(std)
                features = backbone.model(images).float().cpu().numpy().astype(np.float64)
            else:
                features = np.zeros((0, backbone.num_features))
            if on_batch:
                on_batch(len(messages))
            yield features, errors


#: Forward-pass precisions of extraction: full (``32``), or autocast to float16 / bfloat16. How far the mixed
#: ones move the histograms is measured by ``benchmarks/precision.py`` (docs/usage.md).
PRECISIONS = ("32", "16-mixed", "bf16-mixed")


def _autocast(precision: str, device: torch.device):
    if precision not in PRECISIONS:
        raise BadInputError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if precision == "16-mixed" else torch.bfloat16)


def _yield_to_forward(worker_id: int) -> None:
    """Decoding workers run at a lower priority on a CPU: the forward pass keeps its cores, and decoding fills the
    moments its threads wait (between layers, at the ends of parallel regions)."""
    try:
        os.nice(10)
    except OSError:  # not permitted here: run at normal priority
        pass


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from tfp_mlflow.progress import Progress

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), disable=not enabled, transient=False)


def _backbone_for(spec: FingerprintSpec, weights, device) -> Backbone:
    backbone = load_backbone(spec.backbone, weights, device)
    if spec.weights_sha256 and backbone.weights_sha256 != spec.weights_sha256:
        raise SpecMismatchError(f"the {spec.backbone} weights loaded from {backbone.weights_source} hash to "
                                f"{backbone.weights_sha256[:16]}..., but spec {spec.id} was made with "
                                f"{spec.weights_sha256[:16]}...; pass the spec's weights with --weights")
    if backbone.num_features != spec.num_features or backbone.input_size > spec.resize:
        raise SpecMismatchError(f"backbone {spec.backbone} gives {backbone.num_features} features but spec "
                                f"{spec.id} has {spec.num_features}")
    return backbone


@dataclass(frozen=True)
class Draws:
    """How a fingerprint's images are drawn and run through the backbone: one value from the command line to
    :func:`fingerprint_dataset`.

    Attributes
    ----------
    samples : int, optional
        Draws with replacement (default: the spec's, 10,000).
    seed : int
        Seeds which images are drawn and how each is cropped and flipped.
    batch_size, workers : int
        Images per forward pass; decoding threads (default: one per core, at most 8).
    device : str, optional
        ``cpu``, ``cuda``, ... (default: CUDA when present).
    precision : str, optional
        ``"32"``, ``"16-mixed"`` or ``"bf16-mixed"``: the forward pass under autocast (recorded in the fingerprint).
        Default: ``16-mixed`` on a GPU (it moves bKLD distances by at most 0.1 % and leaves rankings unchanged,
        ``benchmarks/precision.py``), ``32`` on a CPU (where float16 is emulated and slower).
    shard : str, optional
        ``"i/N"``: compute only the i-th of N contiguous parts of the draws (merge them with ``tfp merge``).
    skip_unreadable : bool
        Skip images that cannot be decoded (counted in the fingerprint) instead of failing.
    """

    samples: int | None = None
    seed: int = 0
    batch_size: int = 64
    workers: int | None = None
    device: str | None = None
    precision: str | None = None
    shard: str | None = None
    skip_unreadable: bool = False


def fingerprint_dataset(data: str | os.PathLike | ImageDataset, *, spec: FingerprintSpec | None = None,
                        draws: Draws = Draws(), name: str | None = None, keywords: Sequence[str] = (),
                        split: str | None = "train", moments: bool = False, progress: bool = True,
                        backbone: Backbone | None = None, weights: str | os.PathLike | None = None) -> Fingerprint:
    """Fingerprint a labelled image dataset (folder of class folders, CSV manifest or :class:`ImageDataset`).

    Parameters
    ----------
    spec : FingerprintSpec, optional
        Defaults to the shipped spec of the default backbone (:func:`tfp_mlflow.spec.default_spec`).
    draws : Draws
        How many images are drawn, with which seed, on which device and precision (:class:`Draws`).
    split : str, optional
        A manifest's split to draw from (``None``: every row).
    moments : bool
        Also keep second moments (for the FID selector; reveals more than histograms).
    backbone : Backbone, optional
        An already loaded backbone (else the spec's, with ``weights`` when given).
    """
    samples, seed, batch_size, workers = draws.samples, draws.seed, draws.batch_size, draws.workers
    device, precision, shard, skip_unreadable = draws.device, draws.precision, draws.shard, draws.skip_unreadable
    spec = spec or default_spec()
    dataset = data if isinstance(data, ImageDataset) else open_dataset(data, split=split)
    samples = spec.samples if samples is None else samples
    torch_device = torch.device(device) if device else default_device()
    precision = precision or ("16-mixed" if torch_device.type == "cuda" else "32")
    backbone = backbone or _backbone_for(spec, weights, torch_device)
    shard_tuple = parse_shard(shard)
    plan = plan_draws(len(dataset), samples, seed, spec.resize, backbone.input_size)
    builder = FingerprintBuilder(spec, second_moments=moments)
    unreadable: dict[int, str] = {}
    todo = len(_shard_draws(samples, batch_size, shard_tuple))
    with _progress(progress) as bar:
        task = bar.add_task(f"fingerprint {name or dataset.name}", total=todo, rate="")

        def advance(count: int) -> None:
            bar.advance(task, count)
            speed = bar.tasks[task].speed
            bar.update(task, rate=f"{speed:.1f} images/s" if speed else "")

        # Binning runs in a thread beside the next forward pass; one batch in flight keeps the order (and so the
        # floating-point sums) fixed.
        with ThreadPoolExecutor(1) as binner:
            pending: Future | None = None
            for features, errors in iter_features(dataset, backbone, plan, resize=spec.resize,
                                                  batch_size=batch_size, workers=workers, device=torch_device,
                                                  shard=shard_tuple, skip_unreadable=skip_unreadable,
                                                  on_batch=advance, precision=precision):
                unreadable.update(errors)
                if len(features):
                    if pending is not None:
                        pending.result()
                    pending = binner.submit(builder.update, features)
            if pending is not None:
                pending.result()
    extra: dict[str, Any] = {"backbone": spec.backbone, "weights_source": backbone.weights_source}
    if precision != "32":
        extra["precision"] = precision
    if shard:
        extra["shard"] = shard
    if builder.num_draws_ == 0:
        raise BadInputError(f"no image of {str(dataset.root)!r} could be read; nothing to fingerprint")
    if unreadable:
        # Only images that were drawn are known to be unreadable; the description counts the rest.
        extra["skipped_unreadable"] = len(unreadable)
        dataset = dataset.without(set(unreadable))
    return builder.build(name=name or _task_name(dataset), keywords=keywords, num_images=len(dataset),
                         num_classes=len(dataset.classes), class_counts=dataset.class_counts, seed=seed, **extra)


def _task_name(dataset: ImageDataset) -> str:
    return task_name_from(dataset.name)


def create_spec(datasets: Sequence[str | os.PathLike], *, backbone_name: str = DEFAULT_BACKBONE,
                weights: str | os.PathLike | None = None, draws_per_dataset: int = 1000, seed: int = 0,
                quantiles: tuple[float, float] = (0.05, 0.95), batch_size: int = 64, workers: int | None = None,
                device: str | None = None, progress: bool = True, **definition) -> FingerprintSpec:
    """Calibrate a spec's bin edges on the features of reference datasets (docs/method.md §2.5).

    Each dataset contributes ``draws_per_dataset`` draws; the edges are the per-feature ``quantiles`` of all of
    them. Other keyword arguments (``samples``, ``variants``, ``provenance``) are spec fields.
    """
    if not datasets:
        raise BadInputError("spec calibration needs at least one reference dataset (--from DATA)")
    torch_device = torch.device(device) if device else default_device()
    backbone = load_backbone(backbone_name, weights, torch_device)
    resize = int(definition.pop("resize", 256))
    opened = [open_dataset(d) for d in datasets]
    chunks = []
    total = draws_per_dataset * len(opened)
    with _progress(progress) as bar:
        task = bar.add_task("calibrate spec", total=total, rate="")
        for offset, dataset in enumerate(opened):
            plan = plan_draws(len(dataset), draws_per_dataset, seed + offset, resize, backbone.input_size)
            for features, _ in iter_features(dataset, backbone, plan, resize=resize, batch_size=batch_size,
                                             workers=workers, device=torch_device,
                                             on_batch=lambda n: bar.advance(task, n)):
                chunks.append(features)
    provenance = {"reference": [str(d.root) for d in opened], "draws_per_dataset": draws_per_dataset, "seed": seed,
                  **definition.pop("provenance", {})}
    return FingerprintSpec.calibrate(np.concatenate(chunks), quantiles=quantiles, backbone=backbone_name,
                                     weights_sha256=backbone.weights_sha256, input_size=backbone.input_size,
                                     resize=resize, mean=backbone.mean, std=backbone.std, provenance=provenance,
                                     **definition)

"""End-to-end fingerprint throughput against the bare backbone forward, in one run.

End to end = decode + resize + crop/flip + normalise + forward + binning, through `fingerprint_dataset`, on a
synthetic task written to disk as PNGs. Bare = the same model on pre-made tensors of the same batch size. Input
alone = the same draws decoded, resized and cropped by the same loader, with no forward pass. Prints images/s of
each, the share of the bare forward that end to end reaches, the overhead, and which stage bounds the rate: where
the input pipeline alone is slower than the bare forward, it is the bottleneck (add decoding workers, or a GPU's
worth of CPU cores). Runs on a GPU when one is available (``--device``).

    python benchmarks/extract.py [--draws 512] [--batch-size 64] [--images 200] [--backbone tf_efficientnet_lite0]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tfp_mlflow.demo.tasks import DemoTask
from tfp_mlflow.extract import Draws, fingerprint_dataset, load_backbone
from tfp_mlflow.extract.pipeline import default_device
from tfp_mlflow.spec import FingerprintSpec, default_spec


def bare_forward(backbone, batches: int, batch_size: int, device: torch.device) -> float:
    memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    images = torch.randn(batch_size, 3, backbone.input_size, backbone.input_size, device=device).contiguous(
        memory_format=memory_format)
    with torch.inference_mode():
        backbone.model(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(batches):
            backbone.model(images).float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - started)


def input_alone(folder: Path, spec: FingerprintSpec, draws: int, batch_size: int, workers: int,
                crop: int) -> float:
    """Draws per second of the input pipeline alone (decode, resize, crop, flip), as `fingerprint_dataset` loads
    them, with no forward pass."""
    import numpy as np

    from tfp_mlflow.extract import open_dataset, plan_draws
    from tfp_mlflow.extract.pipeline import CACHE_IMAGES, _Draws

    dataset = open_dataset(str(folder))
    plan = plan_draws(len(dataset), draws, 0, spec.resize, crop)
    loader = torch.utils.data.DataLoader(_Draws(dataset.paths, plan, np.arange(draws), spec.resize, crop,
                                                CACHE_IMAGES), batch_size=batch_size, num_workers=workers,
                                         prefetch_factor=4 if workers else None)
    started = time.perf_counter()
    for _ in loader:
        pass
    return draws / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=200, help="images in the synthetic task")
    parser.add_argument("--image-size", type=int, default=384, help="side of the PNGs on disk")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--weights", default=None, help="weights file (timing does not depend on the values)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; medians are printed")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else default_device()
    backbone = load_backbone(args.backbone, args.weights, device=device)
    spec = default_spec()
    if backbone.name != spec.backbone:
        # Any spec of the right width serves for timing; edges do not change the cost.
        spec = FingerprintSpec(backbone=backbone.name, weights_sha256=backbone.weights_sha256,
                               lo=torch.zeros(backbone.num_features).numpy(),
                               hi=torch.ones(backbone.num_features).numpy(), input_size=backbone.input_size,
                               mean=backbone.mean, std=backbone.std)
    with tempfile.TemporaryDirectory() as tmp:
        folder = DemoTask("bench", "endoscopy", num_classes=3, num_images=args.images,
                          image_size=args.image_size, seed=1).write(Path(tmp) / "bench")
        print(f"{args.backbone} on {device}, batch {args.batch_size}, {args.draws} draws from {args.images} "
              f"PNGs of {args.image_size}px, {torch.get_num_threads()} torch threads, median of {args.repeats} "
              f"interleaved runs")
        rates: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            rates.setdefault("bare forward", []).append(
                bare_forward(backbone, max(2, args.draws // args.batch_size), args.batch_size, device))
            for workers in args.workers:
                started = time.perf_counter()
                fingerprint_dataset(folder, spec=spec, backbone=backbone, progress=False,
                                    draws=Draws(samples=args.draws, batch_size=args.batch_size, workers=workers,
                                                device=str(device)))
                rates.setdefault(f"end to end, {workers} workers", []).append(
                    args.draws / (time.perf_counter() - started))
                rates.setdefault(f"input alone, {workers} workers", []).append(
                    input_alone(folder, spec, args.draws, args.batch_size, workers, backbone.input_size))
        bare = statistics.median(rates["bare forward"])
        for label, values in rates.items():
            rate = statistics.median(values)
            share = ("" if not label.startswith("end to end") else
                     f"   {100 * rate / bare:5.1f} % of the bare forward (overhead {100 * (bare / rate - 1):5.1f} %)")
            print(f"{label:<28} {rate:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in values)}){share}")
        for workers in args.workers:
            feed = statistics.median(rates[f"input alone, {workers} workers"])
            bound = ("the input pipeline (it alone is slower than the forward pass)" if feed < bare else
                     "the forward pass (the input pipeline alone is faster)")
            print(f"{workers} workers: bounded by {bound}: input {feed:.1f} images/s, forward {bare:.1f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

"""End-to-end fingerprint throughput against the bare backbone forward, in one run.

End to end = decode + resize + crop/flip + normalise + forward + binning, through `fingerprint_dataset`, on a
synthetic task written to disk as PNGs. Bare = the same model on pre-made tensors of the same batch size. Prints
images/s of both, the overhead ratio and the peak RSS.

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
        bare = statistics.median(rates["bare forward"])
        for label, values in rates.items():
            rate = statistics.median(values)
            overhead = "" if label == "bare forward" else f"   overhead {100 * (bare / rate - 1):5.1f} %"
            print(f"{label:<28} {rate:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in values)}){overhead}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

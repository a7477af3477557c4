"""Training throughput of `tfp train` against a bare PyTorch loop with the same model, data and batch size.

Throughput is steady-state: training images of one epoch over the median epoch time (training plus the held-out
pass), the first epoch left out as warm-up, the same rule on both sides. Both sides train the same network from
the same weights on the same DataLoaders (decode, albumentations, normalise), for the same epochs, each followed
by a pass over the held-out split; `tfp train` adds Lightning, per-epoch MLflow logging (SQLite), best-epoch
checkpointing and the held-out metrics. Each side runs ``--rounds`` times, alternating, and the best round counts.
Prints images/s of both and the overhead ratio.

    python benchmarks/train.py [--images 256] [--image-size 64] [--epochs 3] [--batch-size 32] [--workers 1]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tfp_mlflow.cloud import Cloud
from tfp_mlflow.demo.tasks import DemoTask
from tfp_mlflow.train import TrainConfig, train
from tfp_mlflow.train.data import split_task
from tfp_mlflow.train.network import build_network
from tfp_mlflow.train.run import _accelerator, _loaders, epoch_images_per_second


def bare_loop(config: TrainConfig) -> float:
    """Images/s of a plain PyTorch loop: AdamW, cross-entropy, a held-out pass per epoch."""
    torch.manual_seed(config.seed)
    target = split_task(config.target, seed=config.seed)
    network, _, (mean, std) = build_network(config.architecture, [len(target.classes)])
    train_loader, val_loader = _loaders(config, target, None, mean, std)
    device = torch.device("cuda" if _accelerator(config.device) == "gpu" else "cpu")
    network.to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    seconds = []
    for _ in range(config.epochs):
        started = time.perf_counter()
        network.train()
        for images, labels, _ in train_loader:
            loss = torch.nn.functional.cross_entropy(network(images.to(device)), labels.to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        network.eval()
        with torch.inference_mode():
            for images, _, _ in val_loader:
                network(images.to(device)).softmax(dim=1).cpu()
        seconds.append(time.perf_counter() - started)
    return epoch_images_per_second(seconds, len(train_loader.dataset))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--architecture", default="tf_efficientnet_lite0")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = DemoTask("bench", "histology", num_classes=3, num_images=args.images, image_size=96,
                          seed=0).write(Path(tmp) / "bench")
        cloud = Cloud(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        config = TrainConfig(target=str(folder), architecture=args.architecture, epochs=args.epochs,
                             batch_size=args.batch_size, image_size=args.image_size, workers=args.workers,
                             device=args.device)
        bare, tfp = [], []
        for _ in range(args.rounds):
            bare.append(bare_loop(config))
            tfp.append(train(config, cloud=cloud, progress=False, log_model=False).images_per_second)
    print(f"training: {args.architecture}, {int(args.images * 0.8)} training images of {args.image_size} px, "
          f"batch {args.batch_size}, {args.epochs} epochs, {args.workers} workers, best of {args.rounds}")
    print(f"bare PyTorch loop : {max(bare):8.1f} img/s   (rounds: {', '.join(f'{x:.1f}' for x in bare)})")
    print(f"tfp train         : {max(tfp):8.1f} img/s   (rounds: {', '.join(f'{x:.1f}' for x in tfp)})")
    median = statistics.median
    print(f"overhead          : {100 * (max(bare) / max(tfp) - 1):+.1f} % best of rounds, "
          f"{100 * (median(bare) / median(tfp) - 1):+.1f} % median of rounds  (target <= 10 %)")


if __name__ == "__main__":
    main()

"""A plain PyTorch + timm training script that logs to MLflow, as a lab already has one.

The two lines marked ``# tfp`` are all it takes for its runs to carry a task fingerprint and a measured result that
`tfp harvest` turns into knowledge of the cloud (or `contribute=` sends at once).

    python examples/plain_pytorch.py DATA_FOLDER --model resnet18 --epochs 3
"""
from __future__ import annotations

import argparse

import mlflow
import timm
import torch
from sklearn.metrics import balanced_accuracy_score
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms

import tfp_mlflow  # tfp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a folder of class folders")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--pretrained", default="", help="'imagenet' for timm's weights (needs the hub)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--samples", type=int, default=None, help="fingerprint draws (default: as tfp recommend)")
    args = parser.parse_args()

    torch.manual_seed(0)
    shape = transforms.Compose([transforms.Resize((args.image_size, args.image_size)), transforms.ToTensor()])
    data = datasets.ImageFolder(args.data, transform=shape)
    held_out = max(1, len(data) // 5)
    train, val = random_split(data, [len(data) - held_out, held_out], generator=torch.Generator().manual_seed(0))
    model = timm.create_model(args.model, pretrained=args.pretrained == "imagenet", num_classes=len(data.classes))
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr)

    with mlflow.start_run():
        mlflow.log_params({"model": args.model, "pretrained": args.pretrained or "none", "lr": args.lr,
                           "epochs": args.epochs})
        tfp_mlflow.log_task(args.data, samples=args.samples)  # tfp: the training data's fingerprint, next to the run
        for epoch in range(args.epochs):
            model.train()
            for images, labels in DataLoader(train, batch_size=16, shuffle=True):
                optimiser.zero_grad()
                torch.nn.functional.cross_entropy(model(images), labels).backward()
                optimiser.step()
            model.eval()
            with torch.no_grad():
                pairs = [(model(images).argmax(1), labels) for images, labels in DataLoader(val, batch_size=64)]
            predicted, truth = torch.cat([p for p, _ in pairs]), torch.cat([t for _, t in pairs])
            score = balanced_accuracy_score(truth.numpy(), predicted.numpy())
            mlflow.log_metric("val_bacc", score, step=epoch)
        tfp_mlflow.log_result(architecture=args.model, balanced_accuracy=score, held_out=held_out,  # tfp
                              pretrained=args.pretrained)


if __name__ == "__main__":
    main()

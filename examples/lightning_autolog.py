"""A LightningModule trained with MLflow's autologging, as a lab already has one.

The callback marked ``# tfp`` is the only change: the run MLflow's autologging opens carries the training data's
fingerprint and, when fitting ends, the monitored validation metric with the architecture and the validation size.

    python examples/lightning_autolog.py DATA_FOLDER --model resnet18 --epochs 3
"""
from __future__ import annotations

import argparse

import mlflow
import pytorch_lightning as pl
import timm
import torch
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms

from tfp_mlflow.lightning import TaskCallback  # tfp


class Classifier(pl.LightningModule):
    def __init__(self, model_name: str, num_classes: int, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
        self.outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, _):
        images, labels = batch
        loss = torch.nn.functional.cross_entropy(self.net(images), labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, _):
        images, labels = batch
        self.outputs.append((self.net(images).argmax(1), labels))

    def on_validation_epoch_end(self):
        predicted = torch.cat([p for p, _ in self.outputs])
        truth = torch.cat([t for _, t in self.outputs])
        recalls = [(predicted[truth == c] == c).float().mean() for c in truth.unique()]
        self.log("val_bacc", torch.stack(recalls).mean())
        self.outputs.clear()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a folder of class folders")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=None, help="fingerprint draws (default: as tfp recommend)")
    args = parser.parse_args()

    pl.seed_everything(0)
    shape = transforms.Compose([transforms.Resize((args.image_size, args.image_size)), transforms.ToTensor()])
    data = datasets.ImageFolder(args.data, transform=shape)
    held_out = max(1, len(data) // 5)
    train, val = random_split(data, [len(data) - held_out, held_out], generator=torch.Generator().manual_seed(0))
    mlflow.pytorch.autolog(log_models=False)
    trainer = pl.Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         callbacks=[TaskCallback(args.data, monitor="val_bacc", samples=args.samples)])  # tfp
    trainer.fit(Classifier(args.model, len(data.classes)), DataLoader(train, batch_size=16, shuffle=True),
                DataLoader(val, batch_size=64))


if __name__ == "__main__":
    main()

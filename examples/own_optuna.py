"""A lab's own Optuna study over its own objective, warm-started from the knowledge cloud.

The objective, the storage and the sampler are the lab's; the two lines marked ``# tfp`` enqueue what worked on the
nearest tasks of the cloud (in this script's parameter names) and let the nearest tasks' whole studies shape the
first proposals.

    python examples/own_optuna.py DATA_FOLDER --cloud sqlite:///tfp-cloud/mlflow.db --n-trials 8
"""
from __future__ import annotations

import argparse

import optuna
import timm
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms

import tfp_mlflow  # tfp

MODELS = ["resnet18", "efficientnet_b0", "mobilenetv3_small_100"]


def make_objective(data_folder: str, image_size: int, epochs: int):
    shape = transforms.Compose([transforms.Resize((image_size, image_size)), transforms.ToTensor()])
    data = datasets.ImageFolder(data_folder, transform=shape)
    held_out = max(1, len(data) // 5)
    train, val = random_split(data, [len(data) - held_out, held_out], generator=torch.Generator().manual_seed(0))

    def objective(trial: optuna.Trial) -> float:
        torch.manual_seed(trial.number)
        model = timm.create_model(trial.suggest_categorical("model", MODELS), pretrained=False,
                                  num_classes=len(data.classes))
        optimiser = torch.optim.AdamW(model.parameters(), lr=trial.suggest_float("lr", 1e-4, 1e-2, log=True))
        for _ in range(epochs):
            model.train()
            for images, labels in DataLoader(train, batch_size=16, shuffle=True):
                optimiser.zero_grad()
                torch.nn.functional.cross_entropy(model(images), labels).backward()
                optimiser.step()
        model.eval()
        with torch.no_grad():
            pairs = [(model(x).argmax(1), y) for x, y in DataLoader(val, batch_size=64)]
        predicted, truth = torch.cat([p for p, _ in pairs]), torch.cat([t for _, t in pairs])
        return float(torch.stack([(predicted[truth == c] == c).float().mean() for c in truth.unique()]).mean())

    return objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a folder of class folders")
    parser.add_argument("--cloud", default=None, help="the knowledge cloud (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--storage", default="sqlite:///optuna.db")
    parser.add_argument("--n-trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=None, help="fingerprint draws (default: as tfp recommend)")
    args = parser.parse_args()

    study = optuna.create_study(study_name="own-objective", storage=args.storage, direction="maximize",
                                load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=0))
    space = {"model": CategoricalDistribution(MODELS), "lr": FloatDistribution(1e-4, 1e-2, log=True)}
    start = tfp_mlflow.warm_start(study, args.data, cloud=args.cloud, space=space, samples=args.samples)  # tfp
    print("enqueued from the cloud:", [e["params"] for e in start.enqueued], *start.notes, sep="\n  ")   # tfp
    study.optimize(make_objective(args.data, args.image_size, args.epochs), n_trials=args.n_trials)
    print("best:", study.best_params, round(study.best_value, 3))


if __name__ == "__main__":
    main()

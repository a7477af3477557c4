"""The demo's synthetic tasks: one look per domain family, the same images for the same seed, every class drawn."""
from __future__ import annotations

import numpy as np
from PIL import Image

from tfp_mlflow.demo.tasks import FAMILIES, DemoTask, demo_suite


def _mean_colour(folder) -> np.ndarray:
    return np.mean([np.asarray(Image.open(p).convert("RGB"), dtype=float).mean(axis=(0, 1))
                    for p in sorted(folder.glob("class_*/*.png"))], axis=0)


def test_each_family_draws_its_own_look_and_the_same_seed_the_same_images(tmp_path):
    suite = demo_suite(1, num_images=8, image_size=32, seed=4)
    assert sorted(t.family for t in suite) == sorted(FAMILIES) and len({t.name for t in suite}) == len(suite)
    colours = {}
    for task in suite:
        folder = task.write(tmp_path / "first" / task.name)
        images = sorted(folder.glob("class_*/*.png"))
        assert len(images) == 8 and {p.parent.name for p in images} == {f"class_{c}" for c in
                                                                        range(task.num_classes)}
        assert Image.open(images[0]).size == (32, 32)
        again = task.write(tmp_path / "again" / task.name)
        assert [p.read_bytes() for p in images] == [p.read_bytes() for p in sorted(again.glob("class_*/*.png"))]
        colours[task.family] = _mean_colour(folder)
    # No two families look alike on average: a fingerprint has something to tell apart.
    gaps = [np.abs(colours[a] - colours[b]).max() for i, a in enumerate(FAMILIES) for b in FAMILIES[i + 1:]]
    assert min(gaps) > 3, colours


def test_another_seed_draws_other_images_of_the_same_family(tmp_path):
    one = DemoTask("fundus_a", "fundus", num_classes=2, num_images=4, image_size=32, seed=1)
    two = DemoTask("fundus_b", "fundus", num_classes=2, num_images=4, image_size=32, seed=2)
    assert not np.array_equal(one.image(0), two.image(0))
    assert one.image(0).shape == (32, 32, 3) and one.image(0).dtype == np.uint8
    assert np.bincount(one.labels).tolist() == [2, 2]

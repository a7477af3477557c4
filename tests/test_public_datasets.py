"""A published study's source names its public dataset: in the table, in a suggestion, and when training asks
for its data."""
from __future__ import annotations

import pytest

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.public_datasets import public_dataset, public_datasets
from tfp_mlflow.recommend import recommend
from tfp_mlflow.reference import Reference, bundled_reference
from tfp_mlflow.reference_import import REFERENCE_CONTRIBUTOR
from tfp_mlflow.testing.memory import memory_cloud


def test_every_reference_task_has_its_public_dataset():
    study = Reference.load(bundled_reference())
    table = public_datasets()
    assert set(table) == set(study.tasks)
    for name, task in study.tasks.items():
        assert table[name].id == task.dataset and table[name].name
    chexpert = public_dataset("chexpert_cardiomegaly")
    assert chexpert.name == "CheXpert" and chexpert.url.startswith("https://") and "2019" in chexpert.published
    assert public_dataset("my_own_task") is None
    assert all(d.where() for d in table.values())                 # an address, a publication, or it says so


@pytest.mark.torch
def test_a_reference_source_is_suggested_as_a_dataset_to_download(tmp_path):
    from tfp_mlflow.train import TrainConfig, config_from_recommendation

    cloud = memory_cloud(tmp_path / "cache")
    cloud.contribute(None, name="chexpert_cardiomegaly", keywords=["x_ray", "chest"], num_images=800, num_classes=2,
                     contributor=REFERENCE_CONTRIBUTOR)
    cloud.contribute(None, name="chexpert_copy", keywords=["x_ray", "chest"], num_images=800, num_classes=2)
    cloud.contribute(None, name="mine", keywords=["x_ray"], num_images=90, num_classes=2,
                     data_uri=str(tmp_path), shareable=True)
    result = recommend(cloud, keywords=["x-ray", "chest"], name="new", selector="manual", log=False,
                       scenarios=["cotraining", "pretraining"])
    for scenario in ("cotraining", "pretraining"):
        items = result.suggestions(scenario)
        # The reference task names its dataset; a user's task of the same look but no data is passed over.
        assert [i.source for i in items] == ["chexpert_cardiomegaly", "mine"]
        assert items[0].data_uri is None and items[0].dataset["name"] == "CheXpert"
        assert "CheXpert (public: https://stanfordmlgroup.github.io" in items[0].what
        assert items[1].dataset is None and items[1].data_uri == str(tmp_path)
    assert result.to_json()["scenarios"]["cotraining"]["items"][0]["dataset"]["id"] == "chexpert"
    base = TrainConfig(target=str(tmp_path))
    with pytest.raises(BadInputError, match=r"public dataset CheXpert \(https://.*\): download it and pass "
                                            r"--source-data PATH"):
        config_from_recommendation(result, "cotraining", 1, base, cloud)

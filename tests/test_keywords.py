"""Keywords as people type them: one spelling for case and separators, a query mapped onto the cloud's words, a word
that matches nothing named with its nearest terms; the manual selector and a recommendation read them so."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from tfp_mlflow.cli import main
from tfp_mlflow.cloud import Cloud
from tfp_mlflow.errors import BadInputError
from tfp_mlflow.keywords import canonical, match_keywords, vocabulary
from tfp_mlflow.recommend import recommend
from tfp_mlflow.selectors import get_selector
from tfp_mlflow.task import Task
from tfp_mlflow.testing.stores import sqlite_uri


def test_one_spelling_for_case_spaces_hyphens_and_underscores():
    assert {canonical(k) for k in ("X-Ray", "x ray", " x__ray ", "x_RAY", "x - ray")} == {"x_ray"}
    assert canonical("Endoscopic Instruments") == "endoscopic_instruments" and canonical("-") == ""


def test_a_query_is_mapped_onto_the_vocabulary_and_an_unknown_word_is_named_with_its_nearest():
    counts = vocabulary([("eye", "fundus_photography", "medical"), ("eye", "cataract_surgery"),
                         ("x_ray", "chest"), ("confocal laser endomicroscopy",)])
    assert counts == Counter({"eye": 2, "fundus_photography": 1, "medical": 1, "cataract_surgery": 1, "x_ray": 1,
                              "chest": 1, "confocal_laser_endomicroscopy": 1})
    match = match_keywords(["Eye", "fundus", "X-Ray", "laser endomicroscopy", "chets"], counts)
    assert match.keywords == ("eye", "fundus_photography", "x_ray", "confocal_laser_endomicroscopy", "chets")
    assert match.mapped == {"fundus": ("fundus_photography",),
                            "laser endomicroscopy": ("confocal_laser_endomicroscopy",)}
    assert match.unmatched == {"chets": ("chest",)}
    assert "keyword 'chets' matches no task of the cloud (nearest: chest)" in match.notes()


def test_the_manual_selector_reads_spellings_as_one_keyword():
    selector = get_selector("manual")
    sources = [Task(name="hyphen", keywords=("x-ray", "chest"), num_images=10),
               Task(name="other", keywords=("skin",), num_images=10)]
    spelled = selector.prepare(sources)
    exact = selector.distances(Task(name="t", keywords=("x-ray", "chest")), spelled)
    other = selector.distances(Task(name="t", keywords=("X_Ray", "Chest")), spelled)
    np.testing.assert_array_equal(exact, other)
    assert exact[0] < 0.01 < exact[1]


def test_a_recommendation_by_keywords_maps_them_and_says_so(tmp_path):
    cloud = Cloud(sqlite_uri(tmp_path / "cloud" / "mlflow.db"), cache_dir=tmp_path / "cache")
    for name, keywords in [("fundus_a", ["eye", "fundus_photography"]), ("surgery_a", ["eye", "cataract_surgery"]),
                           ("chest_a", ["x_ray", "chest"])]:
        cloud.contribute(None, name=name, keywords=keywords, num_images=100, num_classes=2)
    result = recommend(cloud, keywords=["eye", "fundus", "retinaa"], selector="manual", log=False)
    assert result.ranking[0].source == "fundus_a"
    assert result.target["keywords"] == ["eye", "fundus_photography", "retinaa"]
    assert "keyword 'fundus' matched fundus_photography" in result.notes
    assert any(n.startswith("keyword 'retinaa' matches no task") for n in result.notes)
    shown = CliRunner().invoke(main, ["recommend", "--selector", "manual", "--keywords", "eye,fundus", "--no-log",
                                      "--tracking-uri", cloud.uri])
    assert shown.exit_code == 0, shown.output
    assert "architecture: no suggestion: none of the sources within reach holds usable architecture" in shown.output
    assert "architecture: top" not in shown.output      # no table of headers alone
    listed = CliRunner().invoke(main, ["keywords", "--tracking-uri", cloud.uri])
    assert listed.exit_code == 0 and "fundus_photography" in listed.output and "keywords of the 3 tasks" in \
        listed.output


def test_a_keyword_that_matches_nothing_is_refused_when_it_is_the_only_signal(tmp_path):
    cloud = Cloud(sqlite_uri(tmp_path / "cloud" / "mlflow.db"), cache_dir=tmp_path / "cache")
    for name, keywords in [("fundus_a", ["eye", "fundus_photography"]), ("chest_a", ["x_ray", "chest"])]:
        cloud.contribute(None, name=name, keywords=keywords, num_images=100, num_classes=2)
    with pytest.raises(BadInputError, match=r"no known task has the keyword 'zebrafish'.*`tfp keywords`"):
        recommend(cloud, keywords=["zebrafish"], selector="manual", log=False)
    shown = CliRunner().invoke(main, ["recommend", "--selector", "manual", "--keywords", "zebrafish", "--no-log",
                                      "--tracking-uri", cloud.uri])
    assert shown.exit_code == 2 and len(shown.output.strip().splitlines()) == 1 and "tfp keywords" in shown.output
    # One matching keyword answers, and says the other moves nothing and that the images play no part.
    result = recommend(cloud, keywords=["zebrafish", "eye"], selector="manual", log=False)
    assert result.ranking[0].source == "fundus_a"
    assert any("1 of the 2 keywords match no known task" in n for n in result.notes)
    assert any("do not use the new task's images" in n for n in result.notes)

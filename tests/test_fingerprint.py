"""Fingerprint file format v1: round trip, merge, validation, and the catalogue of bad files."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from tests.conftest import draw_features
from tfp_mlflow import BadInputError, Fingerprint, FingerprintBuilder, FingerprintSpec, SpecMismatchError, merge


def test_save_load_round_trip_keeps_everything(make_fingerprint, tmp_path):
    fp = make_fingerprint("roundtrip", seed=3, moments=True, keywords=("Chest", "x-ray"))
    loaded = Fingerprint.load(fp.save(tmp_path / "fp.npz"))
    for variant in fp.variants:
        np.testing.assert_array_equal(loaded.counts[variant], fp.counts[variant])
    np.testing.assert_array_equal(loaded.feature_sum, fp.feature_sum)
    np.testing.assert_array_equal(loaded.second_moments, fp.second_moments)
    assert loaded.metadata() == fp.metadata()
    assert loaded.keywords == ("chest", "x-ray")
    assert not list(tmp_path.glob("*.partial"))


def test_histograms_are_normalised_counts_binned_like_torch_histc(small_spec):
    features = np.tile(small_spec.lo, (4, 1))
    features[1] = small_spec.hi                     # upper edge -> last bin
    features[2] = small_spec.hi + 100               # clipped into the last bin
    features[3] = small_spec.lo - 100               # clipped into the first bin
    counts = small_spec.bin(features)
    assert counts["small"][:, 0].tolist() == [2] * small_spec.num_features
    assert counts["small"][:, -1].tolist() == [2] * small_spec.num_features
    centre_of_bin_50 = small_spec.lo + 0.505 * (small_spec.hi - small_spec.lo)
    assert (small_spec.bin(centre_of_bin_50[None])["small"][:, 50] == 1).all()
    assert (small_spec.bin(centre_of_bin_50[None])["large"][:, 505] == 1).all()


def test_merge_of_shards_equals_whole(small_spec):
    features = draw_features(7, n=900)
    whole = FingerprintBuilder(small_spec, second_moments=True)
    whole.update(features)
    shards = []
    for part in np.array_split(features, 3):
        builder = FingerprintBuilder(small_spec, second_moments=True)
        builder.update(part)
        shards.append(builder.build(name="task", seed=1))
    merged, expected = merge(*shards), whole.build(name="task", seed=1)
    assert merged.num_draws == expected.num_draws == 900
    for variant in expected.variants:
        np.testing.assert_array_equal(merged.counts[variant], expected.counts[variant])
    np.testing.assert_allclose(merged.feature_sum, expected.feature_sum, rtol=1e-12)
    np.testing.assert_allclose(merged.second_moments, expected.second_moments, rtol=1e-12)


def test_merge_refuses_other_tasks_and_specs(make_fingerprint, small_spec):
    with pytest.raises(BadInputError, match="different tasks"):
        merge(make_fingerprint("a"), make_fingerprint("b"))
    other = FingerprintSpec(backbone="b", weights_sha256="", lo=small_spec.lo, hi=small_spec.hi * 2)
    with pytest.raises(SpecMismatchError):
        merge(make_fingerprint("a"), make_fingerprint("a", spec=other))


def test_load_with_spec_checks_it(make_fingerprint, small_spec, tmp_path):
    path = make_fingerprint("a").save(tmp_path / "a.npz")
    assert Fingerprint.load(path, small_spec).spec_id == small_spec.id
    other = FingerprintSpec(backbone="b", weights_sha256="", lo=small_spec.lo, hi=small_spec.hi * 2)
    with pytest.raises(SpecMismatchError, match=f"has spec {small_spec.id} but spec {other.id} is required"):
        Fingerprint.load(path, other)


def test_spec_id_is_stable_and_content_addressed(small_spec, tmp_path):
    loaded = FingerprintSpec.load(small_spec.save(tmp_path / "spec.npz"))
    assert loaded.id == small_spec.id and loaded == small_spec
    moved = FingerprintSpec(backbone=small_spec.backbone, weights_sha256=small_spec.weights_sha256,
                            lo=small_spec.lo, hi=np.nextafter(small_spec.hi, np.inf),
                            variants=dict(small_spec.variants))
    assert moved.id != small_spec.id
    renamed = FingerprintSpec(backbone=small_spec.backbone, weights_sha256=small_spec.weights_sha256,
                              lo=small_spec.lo, hi=small_spec.hi, variants=dict(small_spec.variants),
                              provenance={"note": "provenance is not part of the id"})
    assert renamed.id == small_spec.id


def test_calibrate_uses_the_5_and_95_percent_quantiles():
    features = np.arange(2001, dtype=float)[:, None] * np.array([1.0, 2.0])
    spec = FingerprintSpec.calibrate(features, backbone="b", weights_sha256="")
    np.testing.assert_allclose(spec.lo, [100, 200])
    np.testing.assert_allclose(spec.hi, [1900, 3800])


def test_tampered_spec_file_is_refused(small_spec, tmp_path):
    path = small_spec.save(tmp_path / "spec.npz")
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["hi"] = arrays["hi"] + 1
    np.savez(path, **arrays)
    with pytest.raises(BadInputError, match="was altered"):
        FingerprintSpec.load(path)


def test_every_bad_file_is_refused_with_a_one_line_reason(bad_catalogue):
    assert len(bad_catalogue) >= 20
    for case, (path, why) in bad_catalogue.items():
        with pytest.raises(BadInputError) as info:
            Fingerprint.load(path)
        message = str(info.value)
        assert why in message, f"{case}: {message}"
        assert "\n" not in message and str(path) in message, f"{case}: {message}"


def test_zip_bomb_is_refused_before_decompression(bad_catalogue):
    path, _ = bad_catalogue["zip bomb"]
    with zipfile.ZipFile(path) as archive:
        assert max(i.file_size for i in archive.infolist()) > 1 << 31


def test_loading_only_some_variants_skips_the_rest(make_fingerprint, tmp_path):
    fp = make_fingerprint("partial", seed=4, moments=True)
    path = fp.save(tmp_path / "p.npz")
    small = Fingerprint.load(path, variants=("small",), moments=False)
    assert small.variants == ("small",) and small.second_moments is None
    np.testing.assert_array_equal(small.counts["small"], fp.counts["small"])
    with pytest.raises(BadInputError, match="no 'large' variant"):
        small.histogram("large")


def test_a_file_declaring_a_gigabyte_is_refused_from_its_header_in_bounded_memory(small_spec, tmp_path):
    """A few MB of deflated zeros declaring (12, 10**7) int64 (960 MB): refused with and without the spec before any
    member is decompressed; the whole load allocates less than a megabyte."""
    import io
    import tracemalloc
    import zipfile

    m = small_spec.num_features
    big = tmp_path / "big.npz"
    # Deflate's fastest level: the file is a few MB instead of 1, and writing it takes a third of the time.
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("counts_small.npy", "w", force_zip64=True) as member:   # streamed: the test stays small
            np.lib.format.write_array_header_1_0(member, {"descr": "<i8", "fortran_order": False,
                                                          "shape": (m, 10_000_000)})
            chunk = bytes(8 * 1_000_000)
            for _ in range(m * 10):
                member.write(chunk)
        for name, array in (("feature_sum", np.zeros(m)), ("meta", np.array("{}"))):
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    assert big.stat().st_size < 10_000_000
    for spec in (None, small_spec):
        tracemalloc.start()
        with pytest.raises(BadInputError, match="declared"):
            Fingerprint.load(big, spec)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 1_000_000, peak


def test_a_saved_fingerprint_has_the_mode_of_any_new_file(make_fingerprint, tmp_path):
    """Written through a temporary file and renamed, yet readable as the user's other files (not mkstemp's 0600)."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        path = make_fingerprint("mode", seed=1).save(tmp_path / "mode.npz")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        private = make_fingerprint("mode", seed=1).save(tmp_path / "private.npz")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600     # a stricter umask is the user's choice
    finally:
        os.umask(previous)

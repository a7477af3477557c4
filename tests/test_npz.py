"""The .npz reader: every member read from its checked header into a plain, writable array equal to what numpy
itself would load (C and Fortran order, 0-d, empty, every dtype tfp writes), the same from many threads at once."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from tfp_mlflow._npz import json_member, read_npz, write_npz_atomic
from tfp_mlflow._threads import thread_map
from tfp_mlflow.errors import BadInputError

ARRAYS = {
    "counts": np.arange(4 * 7, dtype=np.uint16).reshape(4, 7),
    "fortran": np.asfortranarray(np.random.default_rng(0).normal(size=(5, 3))),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "scalar": np.array(2.5),
    "meta": json_member({"name": "t", "keywords": ["x_ray"]}),
    "big_endian": np.arange(6, dtype=">i4"),
}


@pytest.mark.parametrize("compress", [True, False])
def test_members_read_as_numpy_writes_them(tmp_path, compress):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, **ARRAYS) if compress else np.savez(path, **ARRAYS)
    arrays = read_npz(path, kind="test", required=set(ARRAYS))
    with np.load(path) as npz:
        for name, array in arrays.items():
            expected = npz[name]
            assert array.dtype == expected.dtype and array.shape == expected.shape, name
            np.testing.assert_array_equal(array, expected)
            assert array.flags.writeable, name
    assert arrays["fortran"].flags.f_contiguous and arrays["counts"].flags.c_contiguous


def test_many_threads_read_the_same_archive_alike(tmp_path):
    path = write_npz_atomic(tmp_path / "b.npz", ARRAYS)
    results = thread_map(lambda _: read_npz(path, kind="test", required=set(ARRAYS)), range(64), 8)
    for arrays in results:
        for name in ARRAYS:
            np.testing.assert_array_equal(arrays[name], ARRAYS[name])


def test_a_member_shorter_than_its_header_is_one_line(tmp_path):
    path = tmp_path / "short.npz"
    np.savez(path, a=np.arange(10))
    with zipfile.ZipFile(path) as archive:
        member = archive.read("a.npy")
    with zipfile.ZipFile(path, "w") as archive:        # the header says 10 values; the payload holds 8
        archive.writestr("a.npy", member[:-16])
    with pytest.raises(BadInputError, match="declares shape"):
        read_npz(path, kind="test", required={"a"})

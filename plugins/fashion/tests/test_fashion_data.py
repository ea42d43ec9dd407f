"""The IDX reader and the ``fashion`` dataset, on small files the tests write (real files: skipped if absent)."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from composer_fashion import data
from composer_fashion.idx import IDXError, read_idx, write_idx
from conftest import write_fake

from composer import ComposerError


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_roundtrip_every_type(dtype):
    a = (np.arange(24) - 5).astype(dtype).reshape(2, 3, 4)
    buf = io.BytesIO()
    write_idx(buf, a)
    b = read_idx(io.BytesIO(buf.getvalue()))
    assert b.dtype == np.dtype(dtype) and b.shape == (2, 3, 4)
    np.testing.assert_array_equal(a, b)


def test_idx_header_bytes_and_gzip(tmp_path):
    a = np.array([[1, 2, 3]], dtype=np.uint8)
    write_idx(tmp_path / "a.gz", a, compress=True)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    assert raw == bytes([0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3])  # the format's exact bytes
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)


@pytest.mark.parametrize("blob, message", [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX data type"),
    (b"\x00\x00\x08\x02\x00\x00", "truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "does not match shape"),
    (b"", "bad magic"),
])
def test_idx_rejects_bad_files(blob, message):
    with pytest.raises(IDXError, match=message):
        read_idx(io.BytesIO(blob))


def test_idx_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(IDXError, match="cannot read"):
        read_idx(tmp_path / "nope.gz")


def test_load_from_env_folder(fake_dir):
    root, arrays = fake_dir
    d = data.load("test")
    x, y = arrays["t10k"]
    assert d["x"].shape == (20, 1, 28, 28) and d["x"].dtype == np.uint8 and d["x"].flags.writeable
    np.testing.assert_array_equal(d["x"][:, 0], x)
    np.testing.assert_array_equal(d["y"], y.astype(np.int64))
    assert list(d["values"]) == list(data.CLASSES) and d["meta"]["root"] == str(root)
    assert data.load("train", n=5)["x"].shape[0] == 5
    assert "y" not in data.load("train", labels=False)


def test_root_option_wins_and_plain_files(tmp_path, fake_dir):
    other = tmp_path / "plain"
    other.mkdir()
    arrays = write_fake(other, n_train=12, n_test=6, seed=3, compress=False)
    d = data.load("train", root=str(other))
    np.testing.assert_array_equal(d["x"][:, 0], arrays["train"][0])


def test_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(ComposerError, match="apt-get install dataset-fashion-mnist"):
        data.load("train", root=str(tmp_path))
    assert not data.available(tmp_path)


def test_bad_split_and_n(fake_dir):
    with pytest.raises(ComposerError, match="unknown split 'val'"):
        data.load("val")
    with pytest.raises(ComposerError, match="non-negative integer"):
        data.load("train", n=-1)


def test_labels_out_of_range_rejected(tmp_path):
    write_fake(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(20, 12, dtype=np.uint8), compress=True)
    with pytest.raises(ComposerError, match="labels must lie in 0..9"):
        data.load("test", root=str(tmp_path))


def test_registered_dataset_and_cli_export(fake_dir, tmp_path, capsys):
    from composer.cli import main
    from composer.plugins import get_registry

    assert get_registry().dataset("fashion").obj is data.load
    assert main(["dataset", "fashion", "--split", "test", "-n", "7", "--out", str(tmp_path / "t.npz")]) == 0
    with np.load(tmp_path / "t.npz") as f:
        assert f["x"].shape == (7, 1, 28, 28) and f["y"].tolist() == list(range(7))


@pytest.mark.skipif(not data.available(data.DEFAULT_DIR),
                    reason="real Fashion-MNIST files absent (apt-get install dataset-fashion-mnist)")
def test_real_files():
    d = data.load("test", root=str(data.DEFAULT_DIR))
    assert d["x"].shape == (10000, 1, 28, 28)
    assert np.bincount(d["y"]).tolist() == [1000] * 10  # the test split is balanced
    assert data.load("train", root=str(data.DEFAULT_DIR))["x"].shape == (60000, 1, 28, 28)


def test_mutate_replaces_the_asked_share_of_pixels_deterministically(fake_dir):
    clean = data.load("train", labels=False)["x"]
    a = data.load("train", labels=False, mutate=0.2, seed=3)
    b = data.load("train", labels=False, mutate=0.2, seed=3)
    assert a["x"].dtype == np.uint8 and a["x"].shape == clean.shape
    np.testing.assert_array_equal(a["x"], b["x"])
    changed = float((a["x"] != clean).mean())
    # a replaced pixel keeps its value with probability 1/256 (or the chance of equalling it): about 0.2 changed
    assert 0.15 < changed < 0.21, changed
    assert not np.array_equal(data.load("train", labels=False, mutate=0.2, seed=4)["x"], a["x"])
    assert a["meta"]["mutate"] == 0.2 and a["meta"]["seed"] == 3
    for bad in (-0.1, 1.5, True, "0.2"):
        with pytest.raises(data.FashionDataError, match="mutate"):
            data.load("train", mutate=bad)

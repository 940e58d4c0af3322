"""A compressed file cut short anywhere fails with CheckpointMismatch naming the truncation,
never an IndexError or struct.error from the parser."""

import struct

import pytest

from farm.compress import KMeansQuant, MagnitudePruning, load_compressed, prune_, quantize_, save_compressed
from farm.compress.format import MAGIC, PREFIX
from farm.errors import CheckpointMismatch
from farm.models import get_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("fmt") / "m.farm"
    model = get_model("tiny", width=8)
    prune_(model, MagnitudePruning(0.8, schedule="oneshot"))
    quantize_(model, KMeansQuant(4))  # sparse layers with codes and a codebook, and dense parts
    save_compressed(model, path)
    return path.read_bytes()


def _load_cut(tmp_path, data: bytes):
    path = tmp_path / "cut.farm"
    path.write_bytes(data)
    with pytest.raises(CheckpointMismatch) as info:
        load_compressed(path)
    return str(info.value)


@pytest.mark.parametrize("size", range(13))
def test_file_cut_in_its_first_bytes(tmp_path, saved, size):
    message = _load_cut(tmp_path, saved[:size])
    assert "truncated" in message and f"({size} bytes" in message and "\n" not in message


def test_header_cut_in_the_middle(tmp_path, saved):
    (n,) = struct.unpack("<I", saved[len(MAGIC) + 1:PREFIX])
    assert n > 4  # the zlib header is long enough to cut in the middle
    message = _load_cut(tmp_path, saved[:PREFIX + n // 2])
    assert "truncated" in message and f"needs {PREFIX + n}" in message


def test_every_cut_is_a_checkpoint_mismatch(tmp_path, saved):
    for size in range(0, len(saved), max(1, len(saved) // 200)):
        assert "truncated" in _load_cut(tmp_path, saved[:size])
    assert load_compressed(_write(tmp_path, saved)).order  # the whole file still loads


def test_other_files_are_still_not_ours(tmp_path):
    assert "not a farm compressed model" in _load_cut(tmp_path, b"FARMX\x01")
    assert "not a farm compressed model" in _load_cut(tmp_path, b"P")


def _write(tmp_path, data):
    path = tmp_path / "whole.farm"
    path.write_bytes(data)
    return path

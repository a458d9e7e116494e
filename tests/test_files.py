"""The one atomic-write helper: whole or not at all, and its two error policies."""

from __future__ import annotations

import os

import pytest

from clipsearch._files import OWN, USER, replaced, write_whole
from clipsearch.errors import ClipsearchError


def test_a_failure_half_way_keeps_the_old_file_and_leaves_no_temporary_behind(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with replaced(target, "w") as file:
            file.write("new, half")
            raise RuntimeError("the disk went away")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_a_whole_write_replaces_the_file_with_the_umasks_permissions(tmp_path):
    target = tmp_path / "manifest.json"
    old = os.umask(0o027)
    try:
        write_whole(target, '{"generation": 2}')
    finally:
        os.umask(old)
    assert target.read_text() == '{"generation": 2}'
    assert target.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("durable", [True, False])
def test_a_users_file_fails_in_words_and_the_librarys_own_file_fails_as_the_os_error(tmp_path, durable):
    missing = tmp_path / "no such folder" / "out.csv"
    with pytest.raises(ClipsearchError, match="out.csv cannot be written"):
        with replaced(missing, "w", policy=USER, durable=durable):
            pass
    with pytest.raises(FileNotFoundError):
        write_whole(missing, "x", policy=OWN, durable=durable)

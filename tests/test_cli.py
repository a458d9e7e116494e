"""The command line: help everywhere, output formats, and one-line errors instead of tracebacks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from clipsearch.cli import cli

from .conftest import FIXTURES, TINY_MODEL, clean_environment, make_photos, run_cli


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_every_command_has_help_text():
    top = _invoke("--help")
    assert top.exit_code == 0
    assert cli.help
    for name, command in cli.commands.items():
        assert command.help, f"{name} has no help text"
        result = _invoke(name, "--help")
        assert result.exit_code == 0
        assert "Usage:" in result.output
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"{name} --{param.name} has no help"


@pytest.fixture
def indexed(tmp_path, home):
    """A library of 12 photos in the test's home, for tests that change it."""
    photos = make_photos(tmp_path / "photos", 12)
    result = run_cli("--home", str(home), "crawl", str(tmp_path / "photos"), "--model", TINY_MODEL)
    assert result.returncode == 0, result.stderr
    return photos


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, list[Path]]:
    """(home, photos): a library of 12 photos crawled once for the tests that only read it."""
    base = tmp_path_factory.mktemp("cli-shared")
    photos = make_photos(base / "photos", 12)
    with clean_environment(base / "model-cache"):
        result = run_cli("--home", str(base / "home"), "crawl", str(base / "photos"), "--model", TINY_MODEL)
    assert result.returncode == 0, result.stderr
    return base / "home", photos


def test_crawl_prints_a_summary_and_search_prints_a_table(shared):
    home, _ = shared
    log = (home / "clipsearch.log").read_text()
    assert "crawl done" in log and "12 embedded" in log
    result = run_cli("--home", str(home), "search", "a dog on the beach", "-k", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".jpg") == 5
    assert "score" in result.stdout


def test_search_json_gives_one_object_per_line(shared):
    home, indexed = shared
    result = run_cli("--home", str(home), "search", "--image", str(indexed[4]), "-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["path"] == str(indexed[4])
    assert rows[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]


def test_search_paths_only_prints_just_paths(shared):
    home, indexed = shared
    result = run_cli("--home", str(home), "search", "sunset", "-k", "4", "--paths-only")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert all(line in {str(p) for p in indexed} for line in lines)


def test_status_shows_roots_counts_model_and_index(shared):
    home, indexed = shared
    result = run_cli("--home", str(home), "status")
    assert result.returncode == 0, result.stderr
    assert str(indexed[0].parent) in result.stdout.replace("\n", "")
    assert "12 live" in result.stdout
    assert "tiny-clip.json:random" in result.stdout.replace("\n", "")
    assert "generation 1" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["search"], "give a text query or --image"),
    (["search", "--image", "/no/such/file.jpg"], "no such file"),
    (["crawl", "/no/such/folder"], "no such folder"),
])
def test_bad_queries_and_folders_get_one_line_errors(shared, args, message):
    home, _ = shared
    result = run_cli("--home", str(home), *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_non_image_query_file_is_a_one_line_error(shared, tmp_path):
    home, _ = shared
    (tmp_path / "q.jpg").write_text("not an image")
    result = run_cli("--home", str(home), "search", "--image", str(tmp_path / "q.jpg"))
    assert result.returncode == 1
    assert "not an image" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_search_in_an_empty_library_says_to_crawl_first(home):
    result = run_cli("--home", str(home), "search", "cats")
    assert result.returncode == 1
    assert "clipsearch crawl" in result.stderr


def test_a_crawl_with_another_model_refuses_and_says_how_to_proceed(shared):
    home, indexed = shared
    result = run_cli("--home", str(home), "crawl", str(indexed[0].parent), "--model", "openai")
    assert result.returncode == 1
    assert "ViT-B-32:openai" in result.stderr
    assert "--home" in result.stderr and "clipsearch reembed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("model, spec, tokenizer", [("openai", "ViT-B-32:openai", False),
                                                     ("default", "ViT-B-32-SigLIP2-256:webli", True)])
def test_missing_weights_without_network_name_the_model_cache_and_local_checkpoint(home, tmp_path, model, spec,
                                                                                  tokenizer):
    make_photos(tmp_path / "photos", 1)
    cache = tmp_path / "model-cache"
    result = run_cli("--home", str(home), "crawl", str(tmp_path / "photos"), "--model", model,
                     env={"CLIPSEARCH_MODEL_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert spec in message
    assert str(cache) in message
    assert f"--model {spec.split(':')[0]}:/path/to/open_clip_model.safetensors" in message
    assert ("tokenizer.json" in message) == tokenizer  # SigLIP's tokenizer is to be fetched too
    assert "Traceback" not in message


def test_an_unknown_model_lists_what_is_known(home, tmp_path):
    make_photos(tmp_path / "photos", 1)
    result = run_cli("--home", str(home), "crawl", str(tmp_path / "photos"), "--model", "ViT-B-32:nonsense")
    assert result.returncode == 1
    assert "no pretrained weights called 'nonsense'" in result.stderr
    assert "openai" in result.stderr


def test_errors_lists_nothing_for_a_clean_library(shared):
    home, _ = shared
    result = run_cli("--home", str(home), "errors", "--json")
    assert result.returncode == 0
    assert result.stdout == ""


def test_reembed_switches_the_model_and_embeds_every_photo_again(indexed, home, tmp_path):
    other = tmp_path / "other-tiny.json"
    other.write_text(FIXTURES.joinpath("tiny-clip.json").read_text().replace('"embed_dim": 32', '"embed_dim": 24'))
    result = run_cli("--home", str(home), "reembed", "--model", f"{other}:random")
    assert result.returncode == 0, result.stderr
    status = run_cli("--home", str(home), "status").stdout.replace("\n", "")
    assert "other-tiny.json:random (24-d)" in status
    search = run_cli("--home", str(home), "search", "--image", str(indexed[2]), "-k", "1", "--paths-only")
    assert search.stdout.strip() == str(indexed[2])


def test_the_model_setting_only_chooses_the_model_of_a_new_library(indexed, home, tmp_path):
    (home / "config.toml").write_text('model = "openai"\n')
    search = run_cli("--home", str(home), "search", "--image", str(indexed[0]), "-k", "1", "--paths-only")
    assert search.returncode == 0, search.stderr
    assert search.stdout.strip() == str(indexed[0])
    crawl = run_cli("--home", str(home), "crawl")
    assert crawl.returncode == 0, crawl.stderr
    refused = run_cli("--home", str(home), "crawl", "--model", "openai")
    assert refused.returncode == 1 and "clipsearch reembed" in refused.stderr


def test_status_reads_a_catalog_made_by_an_older_schema(home, tmp_path):
    import sqlite_utils

    from clipsearch.catalog.migrations import m001_create_tables

    home.mkdir(parents=True)
    db = sqlite_utils.Database(home / "catalog.db")
    m001_create_tables(db)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO roots(path, exclude) VALUES ('/old/photos', '[]')")
    db.close()
    result = run_cli("--home", str(home), "status")
    assert result.returncode == 0, result.stderr
    assert "/old/photos" in result.stdout


def test_a_search_piped_into_another_program_keeps_each_path_whole_on_one_line(tmp_path, home):
    deep = tmp_path / "a folder with a rather long name" / ("and another one beneath it " * 3).strip()
    photos = make_photos(deep, 4)
    assert run_cli("--home", str(home), "crawl", str(tmp_path), "--model", TINY_MODEL).returncode == 0
    result = run_cli("--home", str(home), "search", "a photo", "-k", "3", env={"COLUMNS": "40"})
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split("\t") == ["rank", "score", "path", "date", "size", "place", "words"]
    assert len(lines) == 3
    for number, line in enumerate(lines, start=1):
        rank, score, path, date, size, place, words = line.split("\t")
        assert place == ""  # no GPS in these
        assert int(rank) == number and -1 <= float(score) <= 1
        assert path in {str(p) for p in photos} and int(size) == os.path.getsize(path)

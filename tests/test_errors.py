"""The library raises typed errors; each face words them its own way."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from clipsearch import prompt
from clipsearch.cli import cli
from clipsearch.cli import phrase as cli_phrase
from clipsearch.errors import BadArgument, NothingToSearch, NotIndexed
from clipsearch.web.app import create_app
from clipsearch.web.app import phrase as web_phrase

from .conftest import make_photos


def test_an_empty_library_is_said_three_ways(tmp_path, library):
    cli_line = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "search", "a cat"]).stderr
    assert cli_line.startswith("error: the library at") and "run `clipsearch crawl FOLDER` first" in cli_line

    page = TestClient(create_app(library), base_url="http://127.0.0.1:8765").get("/results", params={"q": "a cat"})
    assert page.status_code == 400
    assert "index a folder first" in page.text and "run `clipsearch" not in page.text

    with pytest.raises(NotIndexed) as caught:
        library.search("a cat")
    assert "run `" not in str(caught.value)  # the library's own words name no command
    assert "run `clipsearch crawl FOLDER` first" in prompt.phrase(caught.value)


def test_a_bad_argument_names_the_flag_on_the_command_line_and_the_field_on_the_page(library, tmp_path):
    make_photos(tmp_path / "photos", 3)
    library.crawl([tmp_path / "photos"])
    with pytest.raises(BadArgument) as caught:
        library.search("a cat", k=0)
    assert (caught.value.name, caught.value.value) == ("k", 0)
    assert cli_phrase(caught.value) == "-k 0: must be at least 1"
    assert web_phrase(caught.value) == "k=0: must be at least 1"
    assert prompt.phrase(caught.value) == ":k 0: must be at least 1"
    with pytest.raises(BadArgument, match="threshold"):
        library.duplicates(threshold=1.5)


def test_a_search_for_nothing_asks_for_words_in_each_faces_terms():
    error = NothingToSearch()
    assert "--image PATH" in cli_phrase(error)
    assert "drop a photo" in web_phrase(error)
    assert "path of an image" in prompt.phrase(error)

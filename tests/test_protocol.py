"""The watch daemon's protocol: every request and answer survives JSON, and nothing else is read."""

from __future__ import annotations

import json

import pytest

from clipsearch.daemon import protocol
from clipsearch.errors import DaemonError
from clipsearch.records import CrawlSummary, ImportReport, WalkProblem

MESSAGES = [
    protocol.CrawlRequest(("/photos/a", "/photos/b"), "ViT-B-32:openai", {"exclude": ["*/tmp/*"]}, True),
    protocol.CrawlRequest(),
    protocol.ImportRequest("/x/v.npz", None, None, "/x", False),
    protocol.RemoveRootRequest("/photos/old"),
    protocol.StopRequest(),
    protocol.Crawled(CrawlSummary(found=3, new=2, embedded=2, problems=(WalkProblem("/p/locked", "permission denied"),),
                                  offline=("/mnt/usb",), elapsed=1.5), rebuilt=True),
    protocol.Imported(ImportReport("/x/v.npz", "ViT-B-32:openai", rows=5, added=4, not_finite=1)),
    protocol.RootRemoved("/photos/old", 12),
    protocol.Refused("no space left on the disk"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_comes_back_equal_through_json(message):
    assert protocol.decode(json.loads(json.dumps(protocol.encode(message)))) == message


def test_requests_and_answers_are_told_apart():
    assert protocol.decode_request(protocol.encode(protocol.StopRequest())) == protocol.StopRequest()
    with pytest.raises(DaemonError, match="not a request"):
        protocol.decode_request(protocol.encode(protocol.Refused("no")))
    with pytest.raises(DaemonError, match="not an answer"):
        protocol.decode_answer(protocol.encode(protocol.CrawlRequest()))


@pytest.mark.parametrize("data", [{}, {"kind": "Format"}, {"kind": "CrawlRequest", "folder": "/x"},
                                  {"kind": "RootRemoved", "folder": "/x"}, {"kind": "Crawled", "stats": {}}])
def test_anything_else_is_refused_in_words(data):
    with pytest.raises(DaemonError, match="protocol does not know"):
        protocol.decode(data)

"""Tags of collections and stream processors: Rekognition's limits and characters, merging,
removal, audit, and deletion with their resource."""

from __future__ import annotations

import json

import pytest

from facesearch.errors import (
    CollectionNotFoundError,
    InvalidParameterError,
    StreamProcessorNotFoundError,
)
from facesearch.governance.tags import ResourceKind, validate_tags
from facesearch.media.stream.model import StreamSettings
from facesearch.service import FaceSearch

from ..conftest import face
from ..media.video_helpers import clip

C, P = ResourceKind.COLLECTION, ResourceKind.STREAM_PROCESSOR


@pytest.mark.parametrize(("tags", "ok"), [
    ({"": "x"}, False),  # a key has 1 character at least
    ({"owner": "unit 7", "basis": "art.6/1:e=x+y@z", "retention": ""}, True),
    ({"Eigentümer": "Straße 5", "所有者": "部門"}, True),  # Unicode letters and digits count
    ({"aws:owner": "x"}, False),  # reserved prefix
    ({"k" * 128: "v" * 256}, True),
    ({"k" * 129: "v"}, False),
    ({"k": "v" * 257}, False),
    ({"owner": "a;b"}, False),  # not a tag character
    ({f"k{i}": "v" for i in range(200)}, True),
    ({f"k{i}": "v" for i in range(201)}, False),
])
def test_tag_rules(tags: dict[str, str], ok: bool) -> None:
    if ok:
        assert validate_tags(tags) == tags
    else:
        with pytest.raises(InvalidParameterError):
            validate_tags(tags)


def test_tags_of_collections_and_processors(fs: FaceSearch) -> None:
    fs.collections.create("tagged")
    assert fs.tags.get(C, "tagged") == {}
    assert fs.tags.tag(C, "tagged", {"owner": "unit 7", "class": "A"}) == {
        "owner": "unit 7", "class": "A"}
    assert fs.tags.tag(C, "tagged", {"class": "B", "case": "2024-117"}) == {
        "owner": "unit 7", "class": "B", "case": "2024-117"}
    assert fs.tags.untag(C, "tagged", ["class", "absent"]) == {"owner": "unit 7",
                                                               "case": "2024-117"}
    with pytest.raises(InvalidParameterError, match="at most 200"):
        fs.tags.tag(C, "tagged", {f"k{i}": "v" for i in range(199)})
    with pytest.raises(CollectionNotFoundError):
        fs.tags.tag(C, "nowhere", {"a": "b"})
    with pytest.raises(StreamProcessorNotFoundError):
        fs.tags.get(P, "nowhere")
    events, _ = fs.audit.query(operation="tags.*")
    assert [e.event.operation for e in events] == ["tags.set", "tags.set", "tags.remove"]
    assert events[0].event.collection == "tagged"
    assert json.loads(events[0].event.details["tags"]) == {"owner": "unit 7", "class": "A"}

    # A resource's tags go with it: a new one of the same name starts bare.
    fs.collections.delete("tagged")
    fs.collections.create("tagged")
    assert fs.tags.get(C, "tagged") == {}
    fs.collections.index_image("tagged", face("obama.jpg"))  # a watchlist for the processor
    fs.streams.create("cam", StreamSettings(input_url=str(clip()), collection="tagged"))
    fs.tags.tag(P, "cam", {"site": "lobby"})
    assert fs.tags.get(P, "cam") == {"site": "lobby"} and fs.tags.get(C, "tagged") == {}
    fs.streams.delete("cam")
    fs.streams.create("cam", StreamSettings(input_url=str(clip()), collection="tagged"))
    assert fs.tags.get(P, "cam") == {}

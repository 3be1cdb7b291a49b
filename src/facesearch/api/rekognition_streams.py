"""The Rekognition endpoint's stream processors and resource tags.

Stream processors (CreateStreamProcessor, StartStreamProcessor, StopStreamProcessor,
DescribeStreamProcessor, ListStreamProcessors, DeleteStreamProcessor, UpdateStreamProcessor)
are facesearch's :class:`~facesearch.media.stream.registry.StreamProcessors`, with Rekognition's shapes:

- ``Input.KinesisVideoStream.Arn`` names a camera the operator configured (``facesearch cameras
  add NAME URL``) by its stream name (``arn:aws:kinesisvideo:REGION:ACCOUNT:stream/NAME/N``):
  no Kinesis Video Streams is involved, the processor reads the camera itself;
- ``Output.KinesisDataStream.Arn`` gets Rekognition Video's record of each frame whose faces
  were searched, through the server's Kinesis endpoint (``FACESEARCH_API_KINESIS_*``; refused
  without one); the native event feeds (SSE, WebSocket) carry the processor's events as for
  any processor;
- ``Settings.FaceSearch`` (``CollectionId``, ``FaceMatchThreshold``) is the watchlist search,
  run and audited as the creating key; statuses are Rekognition's (STOPPED, STARTING, RUNNING,
  STOPPING, FAILED; updates are immediate, so never UPDATING);
- what Rekognition keeps for label detection (``ConnectedHome``) processors is refused, never
  accepted and dropped: ``ConnectedHome`` settings, ``S3Destination``, ``NotificationChannel``,
  ``KmsKeyId``, ``RegionsOfInterest``, start and stop selectors, and ``DataSharingPreference``
  with ``OptIn`` true (facesearch shares no data; ``OptIn`` false is accepted).

Tags (TagResource, UntagResource, ListTagsForResource, and ``Tags`` of CreateCollection and
CreateStreamProcessor) label collections and stream processors by their ARNs
(:mod:`facesearch.governance.tags`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from facesearch.api.auth import Operation
from facesearch.api.context import ApiContext
from facesearch.api.paging import page_by_name
from facesearch.errors import InvalidParameterError, NotFoundError
from facesearch.governance.tags import ResourceKind, validate_tags
from facesearch.media.cameras import camera_of_arn
from facesearch.media.kinesis import stream_name
from facesearch.media.sns import ROLE_ARN
from facesearch.media.stream.model import StreamSettings
from facesearch.shapes import rekognition as shapes
from facesearch.shapes.base import public_message
from facesearch.types import Caller

Json = dict[str, Any]
"""A response body, built at the edge from typed service results."""

TagMap = dict[str, str]
"""Tags as a request sends them (checked by :func:`~facesearch.governance.tags.validate_tags`)."""

DEFAULT_PROCESSOR_PAGE = 1000
"""Stream processors ListStreamProcessors returns unless told otherwise, and at most (a larger
``MaxResults``, which the model allows, is clamped to it)."""

RESOURCE_ARN = re.compile(r"^arn:aws:rekognition:([a-z\d-]+):(\d{12}):"
                          r"(collection|streamprocessor)/([a-zA-Z0-9_.\-]{1,255})$")
"""A collection's or stream processor's ARN."""

_NAME = r"^[a-zA-Z0-9_.\-]+$"


class In(BaseModel):
    """Base of every Rekognition request shape (members botocore does not send are ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def arn(ctx: ApiContext, kind: ResourceKind, name: str) -> str:
    """The ARN of a collection or stream processor of this server."""
    s = ctx.settings
    return shapes.rekognition_arn(s.region, s.account_id, kind.value, name)


def resource_of(ctx: ApiContext, resource_arn: str) -> tuple[ResourceKind, str]:
    """The resource an ARN names: :class:`InvalidParameterError` when it is no collection or
    stream processor ARN, not found when it names another region or account."""
    m = RESOURCE_ARN.match(resource_arn)
    if m is None:
        raise InvalidParameterError(f"invalid resource ARN {resource_arn!r}: expected "
                                    "arn:aws:rekognition:REGION:ACCOUNT:collection/NAME or "
                                    "...:streamprocessor/NAME")
    region, account, kind, name = m.groups()
    if (region, account) != (ctx.settings.region, ctx.settings.account_id):
        raise NotFoundError(f"resource {resource_arn!r} does not exist on this server (region "
                            f"{ctx.settings.region}, account {ctx.settings.account_id})")
    return ResourceKind(kind), name


# -- request shapes -------------------------------------------------------------------------

class KinesisArnIn(In):
    Arn: str = Field(min_length=1, max_length=2048)


class StreamInputIn(In):
    KinesisVideoStream: KinesisArnIn | None = None


class S3DestinationIn(In):
    Bucket: str | None = None
    KeyPrefix: str | None = None


class StreamOutputIn(In):
    KinesisDataStream: KinesisArnIn | None = None
    S3Destination: S3DestinationIn | None = None


class FaceSearchIn(In):
    CollectionId: str | None = Field(None, min_length=1, max_length=255, pattern=_NAME)
    FaceMatchThreshold: float | None = Field(None, ge=0, le=100)


class ProcessorSettingsIn(In):
    FaceSearch: FaceSearchIn | None = None
    ConnectedHome: dict[str, Any] | None = None


class DataSharingIn(In):
    OptIn: bool


ProcessorName = Field(min_length=1, max_length=128, pattern=_NAME)


class CreateStreamProcessorIn(In):
    Input: StreamInputIn
    Output: StreamOutputIn
    Name: str = ProcessorName
    Settings: ProcessorSettingsIn
    RoleArn: str = Field(pattern=ROLE_ARN.pattern)
    Tags: TagMap | None = None
    NotificationChannel: dict[str, Any] | None = None
    KmsKeyId: str | None = None
    RegionsOfInterest: list[dict[str, Any]] | None = None
    DataSharingPreference: DataSharingIn | None = None


class ProcessorIn(In):
    Name: str = ProcessorName


class StartStreamProcessorIn(ProcessorIn):
    StartSelector: dict[str, Any] | None = None
    StopSelector: dict[str, Any] | None = None


class ListStreamProcessorsIn(In):
    NextToken: str | None = Field(None, max_length=255)
    MaxResults: int | None = Field(None, ge=1)  # the model: at least 1, no maximum


class UpdateStreamProcessorIn(ProcessorIn):
    SettingsForUpdate: dict[str, Any] | None = None
    RegionsOfInterestForUpdate: list[dict[str, Any]] | None = None
    DataSharingPreferenceForUpdate: DataSharingIn | None = None
    ParametersToDelete: list[str] | None = None


class TagResourceIn(In):
    ResourceArn: str = Field(min_length=20, max_length=2048)
    Tags: TagMap


class UntagResourceIn(In):
    ResourceArn: str = Field(min_length=20, max_length=2048)
    TagKeys: list[str] = Field(max_length=200)


class ListTagsIn(In):
    ResourceArn: str = Field(min_length=20, max_length=2048)


# -- what Rekognition keeps for label detection processors ----------------------------------

LABEL_DETECTION_ONLY = "is for label detection (ConnectedHome) stream processors; facesearch's " \
                       "are face search processors"


def _no_data_sharing(p: DataSharingIn | None) -> None:
    if p is not None and p.OptIn:
        raise InvalidParameterError("DataSharingPreference.OptIn: facesearch shares no data "
                                    "with anyone; only false is accepted")


def face_search_settings(p: CreateStreamProcessorIn) -> StreamSettings:
    """The processor a CreateStreamProcessor request describes, or
    :class:`InvalidParameterError` for what facesearch cannot honour."""
    if p.Settings.ConnectedHome is not None:
        raise InvalidParameterError(f"Settings.ConnectedHome {LABEL_DETECTION_ONLY}; use "
                                    "Settings.FaceSearch")
    search = p.Settings.FaceSearch
    if search is None or search.CollectionId is None:
        raise InvalidParameterError("Settings.FaceSearch.CollectionId is required")
    for given, what in ((p.NotificationChannel, "NotificationChannel"),
                        (p.Output.S3Destination, "Output.S3Destination"),
                        (p.RegionsOfInterest or None, "RegionsOfInterest")):
        if given is not None:
            raise InvalidParameterError(f"{what} {LABEL_DETECTION_ONLY}")
    if p.KmsKeyId is not None:
        raise InvalidParameterError("KmsKeyId: facesearch seals what it keeps at rest with its "
                                    "own key (FACESEARCH_ENCRYPTION_KEY), not KMS")
    _no_data_sharing(p.DataSharingPreference)
    if p.Input.KinesisVideoStream is None:
        raise InvalidParameterError("Input.KinesisVideoStream.Arn is required (its stream name "
                                    "is a camera configured with 'facesearch cameras add')")
    if p.Output.KinesisDataStream is None:
        raise InvalidParameterError("Output.KinesisDataStream.Arn is required")
    video_arn = p.Input.KinesisVideoStream.Arn
    data_arn = p.Output.KinesisDataStream.Arn
    stream_name(data_arn)  # well formed
    return StreamSettings(camera=camera_of_arn(video_arn), collection=search.CollectionId,
                          threshold=search.FaceMatchThreshold,
                          kinesis_data_stream_arn=data_arn,
                          kinesis_video_stream_arn=video_arn, role_arn=p.RoleArn)


# -- operations -----------------------------------------------------------------------------

async def create_stream_processor(ctx: ApiContext, caller: Caller,
                                  p: CreateStreamProcessorIn) -> Json:
    settings = face_search_settings(p)
    tags = validate_tags(p.Tags or {})  # refused before anything is created

    def create() -> None:
        ctx.fs.streams.create(p.Name, settings, caller=caller)
        if tags:
            ctx.fs.tags.tag(ResourceKind.STREAM_PROCESSOR, p.Name, tags, caller=caller)

    await ctx.io(create)
    return {"StreamProcessorArn": arn(ctx, ResourceKind.STREAM_PROCESSOR, p.Name)}


async def start_stream_processor(ctx: ApiContext, caller: Caller,
                                 p: StartStreamProcessorIn) -> Json:
    if p.StartSelector is not None or p.StopSelector is not None:
        raise InvalidParameterError(f"StartSelector and StopSelector {LABEL_DETECTION_ONLY}")
    await ctx.io(lambda: ctx.fs.streams.start(p.Name, caller=caller))
    return {}


async def stop_stream_processor(ctx: ApiContext, caller: Caller, p: ProcessorIn) -> Json:
    await ctx.io(lambda: ctx.fs.streams.stop(p.Name, caller=caller))
    return {}


async def describe_stream_processor(ctx: ApiContext, caller: Caller, p: ProcessorIn) -> Json:
    info = await ctx.io(lambda: ctx.fs.streams.describe(p.Name, caller=caller))
    out = shapes.rekognition_stream_processor(info, ctx.settings.region,
                                                 ctx.settings.account_id)
    if "StatusMessage" in out:  # no server path (a camera's file, say) in what a client reads
        out["StatusMessage"] = public_message(str(out["StatusMessage"]))
    return out


async def list_stream_processors(ctx: ApiContext, caller: Caller,
                                 p: ListStreamProcessorsIn) -> Json:
    infos = {i.name: i for i in await ctx.io(lambda: ctx.fs.streams.list_processors(caller=caller))}
    size = min(p.MaxResults or DEFAULT_PROCESSOR_PAGE, DEFAULT_PROCESSOR_PAGE)  # clamped
    names, nxt = page_by_name(list(infos), p.NextToken, size, "streams")
    out: Json = {"StreamProcessors": [{"Name": n, "Status": infos[n].status.value}
                                      for n in names]}
    if nxt is not None:
        out["NextToken"] = nxt
    return out


async def delete_stream_processor(ctx: ApiContext, caller: Caller, p: ProcessorIn) -> Json:
    await ctx.io(lambda: ctx.fs.streams.delete(p.Name, caller=caller))
    return {}


async def update_stream_processor(ctx: ApiContext, caller: Caller,
                                  p: UpdateStreamProcessorIn) -> Json:
    """What a face search processor can be updated with: ``DataSharingPreferenceForUpdate``
    with ``OptIn`` false (which it already is); the rest is label detection's and refused."""
    for given, what in ((p.SettingsForUpdate, "SettingsForUpdate (ConnectedHomeForUpdate)"),
                        (p.RegionsOfInterestForUpdate, "RegionsOfInterestForUpdate"),
                        (p.ParametersToDelete or None, "ParametersToDelete")):
        if given is not None:
            raise InvalidParameterError(f"{what} {LABEL_DETECTION_ONLY}")
    _no_data_sharing(p.DataSharingPreferenceForUpdate)
    await ctx.io(lambda: ctx.fs.streams.describe(p.Name, caller=caller))
    return {}


async def tag_resource(ctx: ApiContext, caller: Caller, p: TagResourceIn) -> Json:
    kind, name = resource_of(ctx, p.ResourceArn)
    await ctx.io(lambda: ctx.fs.tags.tag(kind, name, p.Tags, caller=caller))
    return {}


async def untag_resource(ctx: ApiContext, caller: Caller, p: UntagResourceIn) -> Json:
    kind, name = resource_of(ctx, p.ResourceArn)
    await ctx.io(lambda: ctx.fs.tags.untag(kind, name, p.TagKeys, caller=caller))
    return {}


async def list_tags_for_resource(ctx: ApiContext, caller: Caller, p: ListTagsIn) -> Json:
    kind, name = resource_of(ctx, p.ResourceArn)
    return {"Tags": await ctx.io(lambda: ctx.fs.tags.get(kind, name, caller=caller))}


Handler = Callable[[ApiContext, Caller, Any], Awaitable[Json]]
STREAM_HANDLERS: dict[Operation, tuple[type[In], Handler]] = {
    Operation.CREATE_STREAM_PROCESSOR: (CreateStreamProcessorIn, create_stream_processor),
    Operation.START_STREAM_PROCESSOR: (StartStreamProcessorIn, start_stream_processor),
    Operation.STOP_STREAM_PROCESSOR: (ProcessorIn, stop_stream_processor),
    Operation.DESCRIBE_STREAM_PROCESSOR: (ProcessorIn, describe_stream_processor),
    Operation.LIST_STREAM_PROCESSORS: (ListStreamProcessorsIn, list_stream_processors),
    Operation.DELETE_STREAM_PROCESSOR: (ProcessorIn, delete_stream_processor),
    Operation.UPDATE_STREAM_PROCESSOR: (UpdateStreamProcessorIn, update_stream_processor),
    Operation.TAG_RESOURCE: (TagResourceIn, tag_resource),
    Operation.UNTAG_RESOURCE: (UntagResourceIn, untag_resource),
    Operation.LIST_TAGS_FOR_RESOURCE: (ListTagsIn, list_tags_for_resource),
}
"""The operations of this module, joined into :data:`facesearch.api.rekognition.HANDLERS`."""

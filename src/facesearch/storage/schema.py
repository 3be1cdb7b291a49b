"""Every table of ``facesearch.db``, the service's metadata database, created in one place.

- collections, images, faces (metadata and sealed vectors), users: the galleries;
- face_crops: a small JPEG of each face for human review (sealed like the vectors), deleted
  with its face;
- audit_outbox: audit events committed with the faces they describe (see
  :mod:`facesearch.governance.trail`);
- access_keys: HTTP API keys (secrets sealed with the master key);
- video_jobs, video_detections, video_matches, video_thumbnails: stored-video jobs and
  their results;
- stream_processors: live stream processor definitions; cameras: the inputs the operator
  names (``facesearch cameras add``);
- resource_tags: tags of collections and stream processors;
- request_signatures, request_answers: the replay defence and idempotency tokens of the HTTP
  API.

The audit trail has its own database (``audit.db``, :mod:`facesearch.governance.audit`), so
that it can be kept, copied and verified apart from the data it describes.

The same tables serve SQLite and PostgreSQL (:mod:`facesearch.storage.database`); they are
made and changed by migrations (:mod:`facesearch.storage.migrate`): a change here needs a
new revision in ``storage/migrations/metadata``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from facesearch.storage.database import Target
from facesearch.storage.migrate import Schema, upgrade

metadata = MetaData()

RowId = BigInteger().with_variant(Integer(), "sqlite")
"""Row ids: 64 bits on PostgreSQL (``BIGSERIAL``), SQLite's ``INTEGER`` (its 64-bit row id)."""

# -- galleries -------------------------------------------------------------------------------


collections_t = Table(
    "collections", metadata,
    Column("id", RowId, primary_key=True),
    Column("name", String, nullable=False, unique=True),
    Column("model_version", String, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("generation", Integer, nullable=False, default=0),
    Column("settings", String, nullable=False, default="{}"),
    sqlite_autoincrement=True,
)

images_t = Table(
    "images", metadata,
    Column("id", RowId, primary_key=True),
    Column("image_id", String, nullable=False, unique=True),
    Column("collection_id", ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
    Column("sha256", String, nullable=False),
    Column("source", String),
    Column("external_id", String),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("faces_detected", Integer, nullable=False),
    Column("faces_indexed", Integer, nullable=False),
    Column("indexed_at", Float, nullable=False),
    UniqueConstraint("collection_id", "sha256"),
    sqlite_autoincrement=True,
)

users_t = Table(
    "users", metadata,
    Column("id", RowId, primary_key=True),
    Column("collection_id", ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", String, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("collection_id", "user_id"),
    sqlite_autoincrement=True,
)

audit_outbox_t = Table(
    "audit_outbox", metadata,
    Column("outbox_id", String, primary_key=True),
    Column("event", String, nullable=False),
    Column("created_at", Float, nullable=False),
)
"""Audit events written in the same transaction as the data they describe (indexed faces),
then appended to the audit trail and removed; a crash in between leaves them here, and
:meth:`facesearch.services.collection.FaceCollections.drain_outbox` appends them on the next open."""

signatures_t = Table(
    "request_signatures", metadata,
    Column("signature", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)
"""SigV4 signatures accepted in the clock-skew window, shared by every API node of a
database, so that a request replayed to another node is refused too
(:class:`facesearch.api.replay.SharedReplays`)."""

answers_t = Table(
    "request_answers", metadata,
    Column("key", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("status", Integer, nullable=True),
    Column("body", LargeBinary, nullable=True),
)
"""The answers of the Rekognition endpoint's requests that run once
(:mod:`facesearch.api.replay`): a request repeated with the same SigV4 signature
(``sig:<signature>``, kept for the clock-skew window) or the same ``ClientRequestToken``
(``tok:<key id>:<operation>:<token>``, kept a day) gets the first answer instead of running
again. ``fingerprint`` is the hash of the token's request (a different request with the same
token is refused); ``status`` is null while the first request runs; ``body`` is sealed when
encryption at rest is on. Shared by every API node of a database and kept across restarts."""

vector_changes_t = Table(
    "vector_changes", metadata,
    Column("id", RowId, primary_key=True),
    Column("collection_id", ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("face_row", BigInteger),
    Column("created_at", Float, nullable=False),
    Index("ix_vector_changes_collection_generation", "collection_id", "generation"),
    sqlite_autoincrement=True,
)
"""The change log of each collection's vectors, beyond additions (new faces have growing row
ids): the face rows deleted at each of its generations, or, ``face_row`` NULL, "every vector
replaced" (re-embedding). A node's vector index applies the generations since its own and
reads nothing else (:class:`facesearch.storage.indexes.IndexCache`); a node whose generation
is older than the log's oldest (entries kept :data:`facesearch.storage.generations.CHANGES_KEPT_S`)
reconciles in full. Only face row ids: no vectors, no face ids."""

vector_sync_t = Table(
    "vector_sync", metadata,
    Column("backend", String, primary_key=True),
    Column("collection_id", ForeignKey("collections.id", ondelete="CASCADE"),
           primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("top_row", BigInteger, nullable=False),
)
"""How far a shared vector backend (Milvus, named ``milvus:<prefix>``) has applied each
collection's changes: the node that finds it behind applies the rest, under the collection's
lock, and moves it on, so that each change is written to the backend once."""

faces_t = Table(
    "faces", metadata,
    Column("id", RowId, primary_key=True),
    Column("face_id", String, nullable=False, unique=True),
    Column("collection_id", ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
    Column("image_row", ForeignKey("images.id", ondelete="SET NULL")),
    Column("user_row", ForeignKey("users.id", ondelete="SET NULL")),
    Column("external_id", String),
    Column("x1", Float, nullable=False),
    Column("y1", Float, nullable=False),
    Column("x2", Float, nullable=False),
    Column("y2", Float, nullable=False),
    Column("landmarks", String, nullable=False),
    Column("score", Float, nullable=False),
    Column("q_size", Float, nullable=False),
    Column("q_sharpness", Float, nullable=False),
    Column("q_brightness", Float, nullable=False),
    Column("q_yaw", Float, nullable=False),
    Column("q_pitch", Float, nullable=False),
    Column("q_roll", Float, nullable=False),
    Column("q_faceness", Float, nullable=True),
    Column("q_recognisability", Float, nullable=True),
    Column("image_width", Integer, nullable=False),
    Column("image_height", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("model_version", String, nullable=False),
    Column("embedding", LargeBinary, nullable=False),
    sqlite_autoincrement=True,
)
Index("faces_by_collection", faces_t.c.collection_id, faces_t.c.id)
Index("faces_by_external_id", faces_t.c.collection_id, faces_t.c.external_id)
Index("faces_by_user", faces_t.c.user_row)
Index("faces_by_image", faces_t.c.image_row)

face_crops_t = Table(
    "face_crops", metadata,
    Column("face_row", ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True),
    Column("jpeg", LargeBinary, nullable=False),
    Column("x0", Float, nullable=False),
    Column("y0", Float, nullable=False),
    Column("side", Float, nullable=False),
    Column("size", Integer, nullable=False),
)
"""A face's crop (:mod:`facesearch.vision.crop`): JPEG bytes (sealed with the face id when
encryption at rest is on), the square it shows (``x0``, ``y0``, ``side`` in pixels of the
source image) and its size in pixels. Written with the face, deleted with it (faces indexed
before crops existed have none)."""

# -- access keys ------------------------------------------------------------------------------

access_keys_t = Table(
    "access_keys", metadata,
    Column("id", RowId, primary_key=True),
    Column("key_id", String, nullable=False, unique=True),
    Column("role", String, nullable=False),
    Column("label", String),
    Column("secret", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("purpose", String),
    Column("case_ref", String),
    Column("expires_at", Float),
    sqlite_autoincrement=True,
)


# -- stored-video jobs -------------------------------------------------------------------------


jobs_t = Table(
    "video_jobs", metadata,
    Column("id", RowId, primary_key=True),
    Column("job_id", String, nullable=False, unique=True),
    Column("kind", String, nullable=False),
    Column("status", String, nullable=False),
    Column("status_message", String),
    Column("progress", Float, nullable=False, default=0.0),
    Column("collection", String),
    Column("source", String, nullable=False),
    Column("input_path", String, nullable=False),
    Column("owned_input", Integer, nullable=False),
    Column("settings", String, nullable=False),
    Column("job_tag", String),
    Column("client_token", String, unique=True),
    Column("webhook_url", String),
    Column("sns_topic_arn", String),
    Column("notification", String),
    Column("caller_actor", String, nullable=False),
    Column("caller_role", String),
    Column("caller_purpose", String),
    Column("caller_case", String),
    Column("caller_client", String),
    Column("owner", String),
    Column("cancel_requested", Integer, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("video_format", String),
    Column("video_codec", String),
    Column("video_width", Integer),
    Column("video_height", Integer),
    Column("video_fps", Float),
    Column("video_duration_ms", Integer),
    Column("video_frames", Integer),
    Column("video_start_ms", Integer),
    Column("frames_analysed", Integer),
    Column("persons", Integer),
    Column("matched_persons", Integer),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("updated_at", Float, nullable=False),
    sqlite_autoincrement=True,
)
Index("video_jobs_by_status", jobs_t.c.status)

detections_t = Table(
    "video_detections", metadata,
    Column("id", RowId, primary_key=True),
    Column("job_row", ForeignKey("video_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("person", Integer, nullable=False),
    Column("timestamp_ms", Integer, nullable=False),
    Column("x1", Float, nullable=False),
    Column("y1", Float, nullable=False),
    Column("x2", Float, nullable=False),
    Column("y2", Float, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("landmarks", String, nullable=False),
    Column("q_size", Float, nullable=False),
    Column("q_sharpness", Float, nullable=False),
    Column("q_brightness", Float, nullable=False),
    Column("q_yaw", Float, nullable=False),
    Column("q_pitch", Float, nullable=False),
    Column("q_roll", Float, nullable=False),
)
Index("video_detections_by_time", detections_t.c.job_row, detections_t.c.timestamp_ms,
      detections_t.c.person)
Index("video_detections_by_person", detections_t.c.job_row, detections_t.c.person,
      detections_t.c.timestamp_ms)

matches_t = Table(
    "video_matches", metadata,
    Column("id", RowId, primary_key=True),
    Column("job_row", ForeignKey("video_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("person", Integer, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("face_id", String, nullable=False),
    Column("external_id", String),
    Column("image_id", String),
    Column("user_id", String),
    Column("similarity", Float, nullable=False),
)
Index("video_matches_by_person", matches_t.c.job_row, matches_t.c.person, matches_t.c.rank)

thumbnails_t = Table(
    "video_thumbnails", metadata,
    Column("job_row", ForeignKey("video_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("person", Integer, primary_key=True),
    Column("timestamp_ms", Integer, nullable=False),
    Column("jpeg", LargeBinary, nullable=False),
)
"""A small JPEG of each person of a face search job (its best view's aligned face; sealed
when encryption at rest is on), deleted with the job."""


# -- stream processors -------------------------------------------------------------------------


processors_t = Table(
    "stream_processors", metadata,
    Column("id", RowId, primary_key=True),
    Column("name", String, nullable=False, unique=True),
    Column("settings", String, nullable=False),
    Column("status", String, nullable=False),
    Column("status_message", String),
    Column("desired_running", Integer, nullable=False, default=0),
    Column("caller_actor", String, nullable=False),
    Column("caller_role", String),
    Column("caller_purpose", String),
    Column("caller_case", String),
    Column("caller_client", String),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    sqlite_autoincrement=True,
)


cameras_t = Table(
    "cameras", metadata,
    Column("id", RowId, primary_key=True),
    Column("name", String, nullable=False, unique=True),
    Column("url", String, nullable=False),
    Column("input_format", String),
    Column("label", String),
    Column("added_by", String, nullable=False),
    Column("created_at", Float, nullable=False),
    sqlite_autoincrement=True,
)
"""Camera inputs the operator configures (name -> URL): a Rekognition client names one as the
stream name of a Kinesis Video Streams ARN; a processor looks its URL up at each start."""


# -- tags ----------------------------------------------------------------------------------------


tags_t = Table(
    "resource_tags", metadata,
    Column("kind", String, primary_key=True),
    Column("name", String, primary_key=True),
    Column("key", String, primary_key=True),
    Column("value", String, nullable=False),
)
"""Tags of collections (kind ``collection``) and stream processors (``streamprocessor``), by
resource name; deleted with their resource."""


# -- the audit trail's database ---------------------------------------------------------------

audit_metadata = MetaData()
"""The audit trail's tables (its own database: ``audit.db`` or its URL); made and changed by
migrations (``storage/migrations/audit``), used by :mod:`facesearch.governance.audit`."""

events_t = Table(
    "events", audit_metadata,
    Column("seq", RowId, primary_key=True, autoincrement=False),
    Column("ts", Float, nullable=False),
    Column("operation", String, nullable=False),
    Column("actor", String, nullable=False),
    Column("role", String),
    Column("collection", String),
    Column("purpose", String),
    Column("case_ref", String),
    Column("client", String),
    Column("probe_sha256", String),
    Column("threshold", Float),
    Column("model_version", String),
    Column("results", String, nullable=False),
    Column("details", String, nullable=False),
    Column("prev_hash", String, nullable=False, unique=True),
    Column("hash", String, nullable=False, unique=True),
)
Index("events_by_actor", events_t.c.actor, events_t.c.seq)
Index("events_by_case", events_t.c.case_ref, events_t.c.seq)
Index("events_by_collection", events_t.c.collection, events_t.c.seq)
Index("events_by_operation", events_t.c.operation, events_t.c.seq)
Index("events_by_ts", events_t.c.ts)

checkpoints_t = Table(
    "checkpoints", audit_metadata,
    Column("seq", RowId, primary_key=True, autoincrement=False),
    Column("head_hash", String, nullable=False),
    Column("ts", Float, nullable=False),
    Column("signature", String, nullable=False),
    Column("key_fingerprint", String, nullable=False),
    Column("tree_root", String),
    Column("tree_frontier", String),
)

outbox_applied_t = Table(
    "outbox_applied", audit_metadata,
    Column("outbox_id", String, primary_key=True),
    Column("seq", RowId, nullable=False),
)
"""Outbox rows (of the metadata database) already appended, so a replay appends each once."""


def create(target: Target) -> None:
    """Create or bring the metadata database ``target`` (an SQLite file or a URL) to the
    schema above: its migrations (:func:`facesearch.storage.migrate.upgrade`)."""
    upgrade(target, Schema.METADATA)

"""The schema as it was before migrations (issue 14): every table of the metadata database.

On an empty database it creates them; on one made by an earlier version of facesearch (no
version table yet) it creates the tables and indexes that are missing and adds the columns
added since a table was first made, so that every data directory ends at this revision.

The tables are a frozen copy of ``facesearch.storage.schema`` at this revision: later
changes there come with later revisions.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
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

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

metadata = MetaData()

RowId = BigInteger().with_variant(Integer(), "sqlite")

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


# -- tags ----------------------------------------------------------------------------------------


tags_t = Table(
    "resource_tags", metadata,
    Column("kind", String, primary_key=True),
    Column("name", String, primary_key=True),
    Column("key", String, primary_key=True),
    Column("value", String, nullable=False),
)


LEGACY_COLUMNS: dict[str, dict[str, sa.types.TypeEngine[object]]] = {
    "access_keys": {"purpose": String(), "case_ref": String(), "expires_at": Float()},
    "video_jobs": {"sns_topic_arn": String(), "video_start_ms": Integer()},
}
"""Columns added to tables of earlier versions (then by ALTER TABLE on open)."""


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table_name, added in LEGACY_COLUMNS.items():
        have = {c["name"] for c in inspector.get_columns(table_name)}
        for name, kind in added.items():
            if name not in have:
                op.add_column(table_name, Column(name, kind))
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(bind, checkfirst=True)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())

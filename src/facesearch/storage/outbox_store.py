"""The audit outbox: audit events staged in the transaction of what they record, until the
trail appends them to the audit log (:mod:`facesearch.governance.trail`)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, insert, select

from facesearch.storage.schema import audit_outbox_t


class Outbox:
    """The ``audit_outbox`` table."""

    def add(self, conn: Connection, outbox_id: str, event_json: str, now: float) -> None:
        conn.execute(insert(audit_outbox_t).values(outbox_id=outbox_id, event=event_json,
                                                   created_at=now))

    def oldest(self, conn: Connection, limit: int = 1000,
               before: float | None = None) -> list[tuple[str, str]]:
        """The oldest ``limit`` outbox rows as ``(outbox_id, event JSON)`` (``before``: only
        those staged before that time)."""
        q = select(audit_outbox_t.c.outbox_id, audit_outbox_t.c.event)
        if before is not None:
            q = q.where(audit_outbox_t.c.created_at < before)
        rows = conn.execute(q.order_by(audit_outbox_t.c.created_at, audit_outbox_t.c.outbox_id)
                            .limit(limit)).all()
        return [(r.outbox_id, r.event) for r in rows]

    def remove(self, conn: Connection, outbox_ids: Sequence[str]) -> None:
        conn.execute(delete(audit_outbox_t).where(audit_outbox_t.c.outbox_id.in_(
            list(outbox_ids))))

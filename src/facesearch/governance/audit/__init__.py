"""Audit trail: an append-only, hash-chained, signed log of every operation on biometric data.

Each :class:`~.event.AuditEvent` says who (actor, role, client address), why (purpose, case
reference), what (operation, collection, probe image hash - never the image -, threshold, model
version, result face ids with similarities) and when (seconds since the epoch, from an
injectable clock). :meth:`~.log.AuditLog.append` appends it to its own database
(``<home>/audit.db``, or a PostgreSQL database shared by several API nodes:
``FACESEARCH_AUDIT_DATABASE_URL``), apart from the metadata database so that erasure and
VACUUM there never touch it.

Tamper evidence:

- **Hash chain.** Event ``seq`` (1, 2, ...) stores ``prev_hash`` (the hash of event
  ``seq - 1``; 64 zeros for the first) and ``hash`` = SHA-256 of
  :func:`~.event.canonical_bytes`, a sorted-key compact UTF-8 JSON of every field plus ``seq``
  and ``prev_hash``. Floats are written as their shortest round-trip decimal (``repr``), which
  is exact: any change to a stored double changes the text. Anyone can recompute the chain
  from an export.
- **Signed checkpoints.** Every ``checkpoint_every`` events, on
  :meth:`~.log.AuditLog.checkpoint` and on :meth:`~.log.AuditLog.shutdown` (when this process
  appended something), the head ``(seq, hash)`` and a timestamp are signed with an Ed25519 key
  kept in a 0600 PEM file. A checkpoint pins everything up to its seq: a consistent rewrite of
  the chain or a cut tail shows against it. An auditor keeps :meth:`~.log.AuditLog.public_key`
  (and, ideally, copies of recent checkpoints) outside the data directory and verifies with
  it, so a replaced key file shows too.

Limits, by construction: someone who can write the file can append well-formed events after the
last checkpoint, and can cut or rewrite events after the last checkpoint unnoticed unless a
checkpoint kept elsewhere covers them. UPDATE and DELETE (and on PostgreSQL TRUNCATE) are
refused by triggers, which stops mistakes, not an attacker with the file or the tables' owner
role; on PostgreSQL a role that may only SELECT and INSERT cannot even do that (see
``docs/deploy.md``).

The package, by concern (each module imports only those above it in this list):

- :mod:`.event`: the event, the appended record, their canonical bytes and hash;
- :mod:`.chain`: signed checkpoints and their keys, the Merkle tree over the events;
- :mod:`.export`: JSON lines and CSV exports, and reading them back;
- :mod:`.verify`: the chain walk, checkpoint, witness and inclusion-proof checks;
- :mod:`.log`: :class:`~.log.AuditLog`, the writer and its queries (appends, concurrency).
"""

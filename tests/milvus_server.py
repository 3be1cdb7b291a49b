"""A Milvus 2.3 standalone server (the ``milvus`` wheel's) for tests and benchmarks, configured
as docs/deploy.md says: its ports on loopback, the interim index's nprobe, and the message-log
and garbage-collector settings of :class:`facesearch.storage.milvus.ServerSettings`.

Needs ``.venv-milvus`` (``scripts/setup-milvus``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

INTERIM_NPROBE = 77
"""facesearch.storage.milvus.INTERIM_NPROBE (as deployed)."""


def start(base: Path, settings: Any, *, port: int | None = None) -> Any:
    """A started ``milvus.MilvusServer`` whose data (and configuration, in
    ``base/configs/milvus.yaml``) is under ``base``; ``settings``: a
    :class:`facesearch.storage.milvus.ServerSettings`."""
    from milvus import MilvusServer, MilvusServerConfig

    server = MilvusServer(MilvusServerConfig())
    server.set_base_dir(str(base))
    config = server.config
    # rocksmq.timtickerInterval is not in the wheel's template, and the wheel only rewrites
    # keys the template has: add it (to the rocksmq section) first.
    anchor = "  compactionInterval:"
    assert anchor in config.template_text
    config.template_text = config.template_text.replace(
        anchor, "  timtickerInterval: 600\n" + anchor, 1)
    for key, value in settings.config().items():
        config.set(key, value)
    config.set("queryNode.segcore.interimIndex.nprobe", INTERIM_NPROBE)
    if port is not None:
        config.set("proxy_port", port)
    server.start()
    written = (base / "configs" / "milvus.yaml").read_text()
    assert f"timtickerInterval: {settings.ticker_s}" in written, "setting not written"
    return server


def wait_usable(server: Any, timeout_s: float = 180) -> None:
    """Until ``server`` (just started again) creates and drops a collection: a restarted
    server answers before its coordinators have recovered, and times out calls meanwhile."""
    import time
    import uuid

    import grpc
    from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections
    from pymilvus.exceptions import MilvusException

    alias, name = f"ready-{uuid.uuid4().hex[:8]}", f"ready_{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout_s
    schema = CollectionSchema([FieldSchema("id", DataType.INT64, is_primary=True),
                               FieldSchema("v", DataType.FLOAT_VECTOR, dim=2)])
    while True:
        try:
            connections.connect(alias, uri=f"http://127.0.0.1:{server.listen_port}", timeout=10)
            Collection(name, schema, using=alias, timeout=10).drop(timeout=10)
            return
        except (MilvusException, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
        finally:
            connections.disconnect(alias)

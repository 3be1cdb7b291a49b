"""``facesearch collection ...`` and ``facesearch policy ...``: collections and their use
policy."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from facesearch.cli.common import HomeOpt, JsonOpt, emit, emit_json, err, out, service, ts
from facesearch.limits import MAX_RESULTS
from facesearch.services.reembed import reembed
from facesearch.shapes.collections import CollectionOut, CollectionsOut, PolicyOut

collection_app = typer.Typer(no_args_is_help=True, help="Create, list, describe, delete collections.")


@collection_app.command("create")
def collection_create(name: str, home: HomeOpt = None, as_json: JsonOpt = False,
                      exist_ok: Annotated[bool, typer.Option(
                          "--exist-ok", help="Succeed if it already exists.")] = False,
                      law_enforcement: Annotated[bool, typer.Option(
                          "--law-enforcement", help="Strict policy: purpose and case required, "
                          "threshold floor at FMR 1e-6, at most 50 candidates.")] = False,
                      ) -> None:
    """Create an empty collection."""
    from facesearch.governance.policy import CollectionPolicy

    with service(home) as fs:
        c = fs.collections.create(name, policy=CollectionPolicy(
            law_enforcement=law_enforcement), exist_ok=exist_ok)
    if as_json:
        emit(CollectionOut.model_validate(c))
    else:
        out.print(f"created collection [bold]{c.name}[/] (model {c.model_version})")


@collection_app.command("list")
def collection_list(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """List collections."""
    with service(home) as fs:
        cs = fs.collections.list_collections()
    if as_json:
        emit(CollectionsOut(collections=[CollectionOut.model_validate(c) for c in cs]))
        return
    t = Table("name", "faces", "users", "images", "model", "created")
    for c in cs:
        t.add_row(c.name, str(c.face_count), str(c.user_count), str(c.image_count),
                  c.model_version, ts(c.created_at))
    out.print(t)


@collection_app.command("describe")
def collection_describe(name: str, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show a collection's size and model."""
    with service(home) as fs:
        c = fs.collections.describe(name)
    shown = CollectionOut.model_validate(c)
    if as_json:
        emit(shown)
        return
    t = Table(show_header=False)
    for k, v in shown.model_dump().items():
        t.add_row(k, ts(v) if k == "created_at" else str(v))
    out.print(t)


@collection_app.command("delete")
def collection_delete(name: str, home: HomeOpt = None,
                      yes: Annotated[bool, typer.Option("--yes", "-y",
                                                        help="Do not ask.")] = False) -> None:
    """Delete a collection and every face in it."""
    if not yes and sys.stdin.isatty():
        typer.confirm(f"Delete collection {name!r} and all its faces?", abort=True)
    with service(home) as fs:
        fs.collections.delete(name)
    err.print(f"deleted collection {name}")


@collection_app.command("reembed")
def collection_reembed(
    name: str, home: HomeOpt = None,
    drop_missing: Annotated[bool, typer.Option(
        "--drop-missing", help="Erase faces whose source image is gone or changed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-embed a collection made with another face model, from its source image files."""
    with service(home) as fs:
        r = reembed(fs.collections, name, drop_missing=drop_missing)
    if as_json:
        emit_json({"collection": r.collection, "old_model": r.old_model,
                   "new_model": r.new_model, "faces_reembedded": r.faces_reembedded,
                   "dropped": r.dropped,
                   "missing": [{"face_id": f, "reason": w} for f, w in r.missing]})
        return
    out.print(f"re-embedded {r.faces_reembedded} face(s) of {name} with {r.new_model}"
              + (f"; erased {r.dropped} that could not be" if r.dropped else ""))


policy_app = typer.Typer(no_args_is_help=True, help="A collection's use policy.")


@policy_app.command("show")
def policy_show(collection: str, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Show the stated and effective policy of a collection."""
    with service(home) as fs:
        info = fs.collections.describe(collection)
    shown = PolicyOut.model_validate(info)
    if as_json:
        emit(shown)
        return
    d = shown.model_dump()
    t = Table("setting", "effective", "stated", title=f"policy of {collection}")
    for k, v in d["effective"].items():
        stated = d["stated"].get(k.replace("floor_false_match_rate", "-"), "")
        shown_v = round(v, 3) if k == "threshold_floor" else v
        t.add_row(k, str(shown_v), "" if stated is None else str(stated))
    out.print(t)


@policy_app.command("set")
def policy_set(
    collection: str,
    home: HomeOpt = None,
    law_enforcement: Annotated[bool | None, typer.Option(
        "--law-enforcement/--not-law-enforcement", help="Strict defaults for police use.")] = None,
    require_purpose: Annotated[bool | None, typer.Option(
        "--require-purpose/--no-require-purpose")] = None,
    floor: Annotated[float | None, typer.Option(min=0, max=100, help="Threshold floor.")] = None,
    max_results_cap: Annotated[int | None, typer.Option(min=1, max=MAX_RESULTS)] = None,
    retention_days: Annotated[float | None, typer.Option(min=0.001)] = None,
    min_probe_recognisability: Annotated[float | None, typer.Option(
        min=0, max=100, help="Refuse probe faces less recognisable than this (0-100; "
                             "default 40 for law enforcement, else 0).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a collection's policy (unset options keep their stated values)."""
    from facesearch.governance.policy import CollectionPolicy

    with service(home) as fs:
        current = fs.collections.describe(collection).settings.model_dump()
        changes = {"law_enforcement": law_enforcement, "require_purpose": require_purpose,
                   "threshold_floor": floor, "max_results_cap": max_results_cap,
                   "retention_days": retention_days,
                   "min_probe_recognisability": min_probe_recognisability}
        current.update({k: v for k, v in changes.items() if v is not None})
        info = fs.collections.set_policy(collection, CollectionPolicy(**current))
    if as_json:
        emit(PolicyOut.model_validate(info))
    else:
        out.print(f"policy of {collection} updated (floor {info.policy.threshold_floor:.2f}, "
                  f"purpose {'required' if info.policy.require_purpose else 'optional'})")

"""Command-line interface: thin commands over the service objects, in groups
(:mod:`~facesearch.cli.collections`, :mod:`~facesearch.cli.faces`,
:mod:`~facesearch.cli.search`, :mod:`~facesearch.cli.governance`, :mod:`~facesearch.cli.media`,
:mod:`~facesearch.cli.serve`, :mod:`~facesearch.cli.eval`, :mod:`~facesearch.cli.db`).

Tables for people, ``--json`` for scripts. Every facesearch error exits with status 1 and a
one-line reason on stderr (mapped once, in :func:`main`); usage errors exit with 2.
"""

from __future__ import annotations

import logging
import signal
import sys

import typer

from facesearch.cli import collections, faces, governance, media, search, serve
from facesearch.cli.common import err
from facesearch.cli.db import db_app
from facesearch.cli.eval import eval_app
from facesearch.errors import FaceSearchError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Self-hosted, accountable face search.")
"""The command line: each command a thin call into the service (:mod:`facesearch.service`),
grouped by what it touches."""
app.command("index")(faces.index)
app.command("search")(search.search)
app.command("compare")(search.compare)
app.command("detect")(faces.detect)
app.command("embed")(faces.embed)
app.command("serve")(serve.serve)
app.command("erase")(governance.erase)
app.command("retention")(governance.retention)
app.command("review")(governance.review)
app.add_typer(collections.collection_app, name="collection")
app.add_typer(faces.faces_app, name="faces")
app.add_typer(search.users_app, name="users")
app.add_typer(eval_app, name="eval")
app.add_typer(governance.audit_app, name="audit")
app.add_typer(governance.keys_app, name="keys")
app.add_typer(collections.policy_app, name="policy")
app.add_typer(media.video_app, name="video")
app.add_typer(media.stream_app, name="stream")
app.add_typer(media.cameras_app, name="cameras")
app.add_typer(db_app, name="db")


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind like Ctrl-C, so every command shuts down cleanly."""


_TERMINATED: list[bool] = []


def _on_sigterm(signum: int, frame: object) -> None:
    _TERMINATED.append(True)
    raise Terminated()


def main() -> None:
    """Entry point: run the app, mapping facesearch errors to one line and exit status 1.

    Usage errors (typer's, shown with the command's help hint) exit with status 2. SIGTERM
    (systemd, container runtimes) is handled like SIGINT: the command stops, shuts its
    services down (final audit checkpoint, index files written) and exits with 143.
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Setup warnings (secrets kept in the data directory) are for the server's log, not for
    # every one-shot command's stderr (whose errors are one line).
    logging.getLogger("facesearch.setup").addHandler(logging.NullHandler())
    try:
        _run()
    finally:
        if _TERMINATED:  # whatever the command made of the interruption
            err.print("terminated")
            sys.exit(128 + signal.SIGTERM)  # after the shutdown; the status says why


def _run() -> None:
    try:
        code = app(standalone_mode=False)
    except FaceSearchError as exc:
        err.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: bad or missing arguments and options
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {exc}")
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)

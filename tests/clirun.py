"""``facesearch ARGS`` run in the test process: the real entry point
(:func:`facesearch.cli.main`, with its error mapping and exit codes) without starting a Python
process, importing the CLI (1.3 s) and loading its models each time.

The streams and environment are isolated with click's :class:`~click.testing.CliRunner`; the
process-wide state a command sets (the umask the service sets, the SIGTERM handler and the
logging handler :func:`~facesearch.cli.main` installs, the working directory, ``sys.argv``)
is put back after each run, so one test's run cannot leak into the next.

A few tests still start ``python -m facesearch`` where the process itself is under test
(signals, output into a pipe, the installed entry point).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner


@dataclass(frozen=True)
class CliResult:
    """What a run left: its exit status and its whole stdout and stderr (as
    :class:`subprocess.CompletedProcess` names them)."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: Mapping[str, str | None] | None = None,
            cwd: Path | None = None) -> CliResult:
    """Run ``facesearch ARGS`` in this process with ``env`` over ``os.environ`` (None unsets
    a variable) in ``cwd``; never raises for a non-zero exit (a bug's exception does)."""
    from facesearch import cli
    from facesearch.cli import common

    setup_log = logging.getLogger("facesearch.setup")
    handlers = list(setup_log.handlers)
    on_term = signal.getsignal(signal.SIGTERM)
    umask = os.umask(0o022)
    os.umask(umask)
    argv, here = sys.argv, os.getcwd()
    with CliRunner().isolation(env=env) as (stdout, stderr, _):
        sys.argv = ["facesearch", *args]
        # The consoles' width as a process started with this environment and these (piped)
        # streams would choose it (COLUMNS, else room enough for a table's paths).
        common.out.width = common._console().width
        common.err.width = common._console(stderr=True).width
        try:
            if cwd is not None:
                os.chdir(cwd)
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.argv = argv
            os.chdir(here)
            os.umask(umask)
            signal.signal(signal.SIGTERM, on_term)
            setup_log.handlers[:] = handlers
        return CliResult(code, stdout.getvalue().decode(), stderr.getvalue().decode())

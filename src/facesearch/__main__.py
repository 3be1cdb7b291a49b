"""``python -m facesearch``: the command-line interface."""

from facesearch.cli import main

main()

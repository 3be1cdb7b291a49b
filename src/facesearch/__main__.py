"""``python -m facesearch``: the command-line interface."""

from .cli import main

main()

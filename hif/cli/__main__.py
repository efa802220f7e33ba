"""``python -m hif.cli``: the full CLI, without the quick ``hif status`` path of ``python -m hif``."""

from hif.cli.main import main

main()

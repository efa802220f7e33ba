"""The ``hif`` command (also ``python -m hif``): :mod:`hif.quickstatus` answers a plain ``hif status``
when it can, without importing click and the SDK; everything else goes to the click CLI."""

from __future__ import annotations

import os
import sys


def main() -> None:
    if sys.argv[1:2] == ["status"]:
        from hif.quickstatus import run

        code = run(sys.argv[2:])
        if code is not None:  # printed, flushed and saved: skip the interpreter's teardown (freeing
            os._exit(code)  # every object one by one costs a few ms after a large tree)
    from hif.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()

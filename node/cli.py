"""The `micelio` command. The forge node is not built yet (see the open issues); until it is, the
command says so in one line instead of failing with an import error."""

from __future__ import annotations

import sys


def main() -> None:
    print("error: the forge node (micelio serve) is not built yet; use hif for now", file=sys.stderr)
    sys.exit(1)

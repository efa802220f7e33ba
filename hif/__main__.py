"""The ``hif`` command (also ``python -m hif``): an agent's hook is answered without click or the SDK;
every other command goes to this user's warm command server (:mod:`hif.cli.warm`) when one accepts
it; without one, :mod:`hif.worktree.quickstatus` answers a plain ``hif status`` when it can (no
click, no SDK) and the click CLI in this process everything else."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not imported from typing, which a quick ``hif status`` does without
if TYPE_CHECKING:
    from typing import NoReturn


def main() -> None:
    if sys.argv[1:3] == ["agent", "hook"]:
        # a coding agent's hook, run at every prompt and edit: no click, no SDK (start-up time)
        import gc

        gc.disable()  # a short process whose imports make no cycles worth collecting
        from hif.cli.agenthook import run as hook  # (start-up time, as above)

        code = hook(sys.argv[3:])
        sys.stdout.flush()
        os._exit(code)
    from hif.cli import warm  # a client of stdlib modules loaded already (start-up time)

    code = warm.run(sys.argv)
    if code is not None:  # the server ran it: nothing of this process's to flush or tear down
        os._exit(code)
    run_here()


def run_here() -> NoReturn:
    """Run the command in this process (a warm server's child too): a plain ``hif status`` by the
    quick path when it can, anything else by the click CLI."""
    if sys.argv[1:2] == ["status"]:
        # the quick path answers without click or the SDK (start-up time)
        from hif.worktree.quickstatus import run

        code = run(sys.argv[2:])
        if code is not None:  # printed, flushed and saved: skip the interpreter's teardown (freeing
            _exit(SystemExit(code))  # every object one by one costs a few ms after a large tree)
    run_cli()


def run_cli() -> NoReturn:
    """The click CLI on ``sys.argv``, then out with its exit code (a warm server's child too)."""
    import gc

    gc.disable()  # importing the CLI allocates tens of thousands of objects and frees almost none:
    # the collections it would trigger find nothing to free; imported only now (start-up time)
    from hif.cli.main import main as cli_main

    gc.enable()
    try:
        cli_main()
    except SystemExit as e:
        _exit(e)
    _exit(SystemExit(0))


def _exit(e: SystemExit) -> NoReturn:
    """Leave with ``e``'s exit code without the interpreter's teardown, which frees every module and
    object one by one: a tenth of a short command's CPU. What the teardown would do that matters is
    done first (flush the output, run the atexit handlers); anything unusual takes the ordinary way
    out: another thread still running, a code that is not a number, output that cannot be written,
    a profiler or tracer (``python -m cProfile -m hif``, coverage) that reports at the end."""
    code = 0 if e.code is None else e.code
    threading = sys.modules.get("threading")  # not imported (a quick status): no other thread
    quiet = sys.getprofile() is None and sys.gettrace() is None
    if quiet and isinstance(code, int) and (threading is None or threading.active_count() == 1):
        import atexit  # (a built-in module)

        atexit._run_exitfuncs()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            raise e from None
        os._exit(code)
    raise e


if __name__ == "__main__":
    main()

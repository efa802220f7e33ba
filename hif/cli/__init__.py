"""The ``hif`` command line: a thin shell over :class:`hif.Repository`, one module per group of
commands (repos, sessions, working, history, interop) on the group of :mod:`hif.cli.app`, with
printing and the errors -> exit codes mapping in :mod:`hif.cli.output` and progress displays in
:mod:`hif.cli.progress`. :mod:`hif.cli.main` registers them all. Only the CLIs import this package."""

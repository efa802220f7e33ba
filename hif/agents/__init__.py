"""Coding agents' work recorded into sessions (docs/agents.md): the agents' hook inputs and transcripts
read into neutral items (:mod:`~hif.agents.formats`), secrets redacted (:mod:`~hif.agents.redact`),
Agent Trace records written and read (:mod:`~hif.agents.trace`). Plumbing: no working copy, no CLI.
This package imports nothing itself: the hook imports only the modules it needs (start-up time)."""

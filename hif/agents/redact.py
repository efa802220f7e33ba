"""Secrets a coding agent's conversation may carry, replaced by a visible marker before anything is
recorded: ``[redacted:<kind>]``. Only text the conversation holds (prompts, replies, notes, imported
transcripts) is redacted; the files an agent writes are the user's own and are stored as they are.

The patterns are of secrets with a recognisable shape (a vendor prefix, a PEM block, a ``password=``
assignment): a random string with no such shape cannot be told from an id or a hash, so it is kept.
"""

from __future__ import annotations

import re

# (kind, pattern, group kept before the marker): the first that matches a span wins; each pattern is
# linear (no nested repetition), so a hostile text costs time in proportion to its length
_PATTERNS: list[tuple[str, re.Pattern[str], int]] = [
    ("private-key", re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----"
                               r"(?:.*?-----END [A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----|.*\Z)", re.S), 0),
    ("anthropic-key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{16,}"), 0),
    ("api-key", re.compile(r"\bsk-(?:proj-|live-|test-)?[A-Za-z0-9_-]{20,}"), 0),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"), 0),
    ("gitlab-token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), 0),
    ("aws-key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"), 0),
    ("aws-secret", re.compile(r"((?i:aws_secret_access_key)[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}"), 1),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), 0),
    ("google-key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), 0),
    ("stripe-key", re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"), 0),
    ("micelio-token", re.compile(r"\bmc[lw]_[A-Za-z0-9_-]{32}"), 0),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), 0),
    ("bearer", re.compile(r"(\b(?i:bearer)\s+)[A-Za-z0-9._~+/-]{8,}=*"), 1),
    ("url-password", re.compile(r"(\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]{1,100}:)[^\s@/]{1,200}(?=@)"), 1),
    ("password", re.compile(r"(\b(?i:password|passwd|pwd|passphrase|secret|api[_-]?key|access[_-]?token"
                            r"|auth[_-]?token|client[_-]?secret)[\"']?\s*[:=]\s*[\"']?)"
                            r"(?!\[redacted:)[^\s\"',;]{1,200}"), 1),
]
_ANY = re.compile("|".join(f"(?:{p.pattern})" for _, p, _g in _PATTERNS[1:]) + "|-----BEGIN")


def redact(text: str) -> str:
    """``text`` with every recognised secret replaced by ``[redacted:<kind>]`` (what led up to a
    value, like ``password=`` or ``Bearer``, is kept so the reader sees what was there)."""
    if not _ANY.search(text):  # the common case: one scan, nothing to replace
        return text
    for kind, pattern, keep in _PATTERNS:
        marker = f"[redacted:{kind}]"
        text = pattern.sub((lambda m, k=keep, mk=marker: (m.group(k) if k else "") + mk), text)
    return text

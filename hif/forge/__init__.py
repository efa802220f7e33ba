"""The client of a forge: URLs, the credentials ``hif login`` keeps, the HTTP client, account
actions, and ``RemoteRepo`` (plumbing whose mainline and sessions live on a forge)."""

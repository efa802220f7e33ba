"""The hif HTTP API (docs/api.md), one module per resource; ``node.api.routing`` declares each route
once, in ``ROUTES``. Importing this package registers every route module's routes on ``bp``, so the
table is whole wherever it is read (the composition root, the route-matrix test).
"""

from node.api import accounts, checks, federation, objects, repos, search, sessions
from node.api.routing import ROUTES, Route, bp

__all__ = ["ROUTES", "Route", "accounts", "bp", "checks", "federation", "objects", "repos", "search", "sessions"]

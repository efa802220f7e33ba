"""The web UI as one blueprint (``bp``): importing this module registers every page module's routes
on it; the composition root registers it on the app."""

from ui import account, archive, compare, feeds, offers, repo, sessions, site
from ui.web import bp

__all__ = ["account", "archive", "bp", "compare", "feeds", "offers", "repo", "sessions", "site"]

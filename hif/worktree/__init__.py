"""The working copy: the stat cache (index), safe file writes and the move journal (workspace),
checkout, and the quick ``hif status`` path."""

"""Git interop: a Git branch's history as landed sessions (``hif import git``) and the mainline back
as a Git repository (``hif export git``).

Both directions go through Git's own documented stream formats, never Git's object files: the import
parses ``git fast-export`` as it streams (each blob is stored as it arrives; each commit's tree is its
first parent's tree with the commit's changes applied by ``hif.tree.apply``, so the cost follows the
size of the changes), and the export feeds ``git fast-import``, so Git itself builds and checks every
object that comes back.

Mapping (docs/architecture.md, "Git interop"):

- each commit of the branch's first-parent chain becomes one landed session at the next position:
  goal = the message's first line, a ``say`` event with the rest (marked ``git``), author = the
  author's name (the address stays in the kept author line), role ``imported``; ``write``/``delete``
  events with the exact changes against the first parent (a rename is a delete and an add);
- the commits a merge brings in (reachable from its other parents, not imported before) become the
  merge session's iterations: ``checkpoint`` events with their trees, in topological order;
- every record keeps the commit exactly (``extra["git"]``: id, parents, raw author and committer
  lines, raw message and encoding), and each checkpoint keeps its commit likewise, so the export can
  rebuild identical commits, and so identical commit ids when nothing was lost (signatures are):
  the import checks which, hashing the commit rebuilt from the stream, and keeps ``exact``;
- the mainline is the progress: its head record names the last imported commit, so a rerun continues
  with the commits after it, and a record (the commit point) is only written once every object it
  names is stored.
"""

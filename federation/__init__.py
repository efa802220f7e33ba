"""Federation: node identity, signed landing envelopes, HTTP signatures, delivery, mirrors and
offers (see docs/architecture.md, "Federation"). Imports ``hif``, never ``node``."""

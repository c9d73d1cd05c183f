"""The admin API (generated; see :mod:`authz.api.generate`)."""

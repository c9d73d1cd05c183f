"""The admin service's domain logic, free of transport (gRPC lives in :mod:`authz.server.admin`).

- :mod:`authz.admin.keys`: admin key format, hashing, roles, :class:`Principal`, :func:`authenticate`.
- :mod:`authz.admin.policies`: draft validation and dry-run (given inputs or an audit replay).
- :mod:`authz.admin.webhook`: the approval webhook notifier (an outbox the admin service polls).
"""

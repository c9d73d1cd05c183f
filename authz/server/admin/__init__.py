"""The admin gRPC service (ARCHITECTURE §11): servicers, the access table and the auth interceptor.

Run it with ``tessera serve-admin`` (:func:`authz.server.admin.app.serve_admin`). Domain logic that does
not depend on gRPC lives in :mod:`authz.admin`; the one exception → status mapping in
:mod:`authz.server.status`.
"""

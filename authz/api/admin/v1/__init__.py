"""``authz.api.admin.v1``: messages and gRPC stubs (generated; do not edit)."""

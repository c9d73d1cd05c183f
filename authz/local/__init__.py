"""What runs Tessera on one machine: the Envoy config renderer and process, and the local stack.

- :mod:`authz.local.envoy_config` renders the gateway's Envoy bootstrap from the one shipped template
  (``authz/local/envoy/envoy.yaml``, next to the admin API's descriptor set), validates it with
  ``envoy --mode validate`` and runs Envoy (``tessera run``, the tests, the benchmark,
  ``tessera envoy-config`` for deployments);
- :mod:`authz.local.stack` starts the demo tool server, check replicas, the admin service and Envoy as
  child processes (``tessera run``, ``make run``, the integration tests).

Nothing on the check path imports this package.
"""

"""The operator console's route and cluster, added to the rendered Envoy config when it runs.

The console (``tessera serve-console``) is plain HTTP/1.1 behind Envoy at ``/console``: the check
(ext_authz) is off there, as on the admin API's routes, since the console authenticates people itself
(OIDC) and calls the admin API with their credential; the transcoder is off (it would answer 404 to any
path it cannot map).
"""

from __future__ import annotations

from typing import Any

CONSOLE_CLUSTER = "tessera_console"
_OFF = {
    "envoy.filters.http.ext_authz": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
        "disabled": True,
    },
    "envoy.filters.http.grpc_json_transcoder": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "disabled": True,
    },
}


def add_console_route(vhost: dict[str, Any]) -> None:
    """``/console`` and everything under it, before the catch-all ``not_found`` route."""
    routes = vhost["routes"]
    index = next((i for i, r in enumerate(routes) if r.get("name") == "not_found"), len(routes))
    route = {
        "name": "console",
        # A path_separated_prefix matches /console and /console/..., not /consolex.
        "match": {"path_separated_prefix": "/console"},
        "route": {"cluster": CONSOLE_CLUSTER, "timeout": "300s"},  # an audit export may stream a while
        "typed_per_filter_config": {name: dict(config) for name, config in _OFF.items()},
    }
    routes.insert(index, route)


def console_cluster(endpoint: tuple[str, int]) -> dict[str, Any]:
    host, port = endpoint
    return {
        "name": CONSOLE_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "per_connection_buffer_limit_bytes": 32768,
        "load_assignment": {
            "cluster_name": CONSOLE_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                    ]
                }
            ],
        },
    }

"""``python -m authz.demo``: serve the demo upstream."""

from authz.demo._app import main

raise SystemExit(main())

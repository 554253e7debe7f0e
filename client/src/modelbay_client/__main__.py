"""``python -m modelbay_client``: the ``modelbay`` command."""

from modelbay_client.cli import main

raise SystemExit(main())

"""``python -m veza_ops``: the ``veza-ops`` command."""

from veza_ops.cli import main

raise SystemExit(main())

"""`python -m app` is the `tlsrpt` command."""

from app.cli import main

raise SystemExit(main())

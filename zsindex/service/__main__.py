"""``python -m zsindex.service``: serve the app (the benchmark's server processes use this)."""

from zsindex.service.server import main

main()

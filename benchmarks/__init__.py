"""livefeed's benchmark suite: a cheap WebSocket load generator, peers, and RESULTS.md.

Run it with ``benchmarks/run`` (see benchmarks/README.md).
"""

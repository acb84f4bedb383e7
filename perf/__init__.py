"""Benchmark harness: portside against nginx and HAProxy, in one run, on 127.0.0.1.

Entry points are the scripts `perf/run` (every scenario, every proxy) and
`perf/profile` (one portside worker under py-spy); `make perf` and `make profile`
install what they need and call them.
"""

"""Workers count responses and resends; the master's totals are exact across workers."""

from __future__ import annotations

from bisect import bisect_left

from conftest import free_port, wait_until

from portside.worker.stats import DURATION_BUCKETS, duration_bucket


def test_master_totals_count_503_504_and_resends_across_workers(portside, whoami):
    backend = whoami("w1")
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = portside(
        f"""
        [http.routers.empty]
        rule = "Host(`empty.localhost`)"
        service = "empty"
        [http.services.empty.loadBalancer]
        servers = []

        [http.routers.slow]
        rule = "Host(`slow.localhost`)"
        service = "slow"
        [http.services.slow.loadBalancer]
        servers = [ {{ url = "{backend.url}" }}, {{ url = "{dead}" }} ]
        """,
        workers=2,
        extra_static="""
        [log]
        level = "DEBUG"
        [serversTransport.forwardingTimeouts]
        responseHeaderTimeout = "300ms"
        """,
    )
    for _ in range(6):  # new connections each: they spread over both workers
        assert proxy.get("empty.localhost").status == 503
    for _ in range(2):
        assert proxy.get("slow.localhost", "/?sleep=2").status == 504
    for _ in range(4):
        assert proxy.get("slow.localhost").status == 200  # the dead server's turns are resent
    wait_until(lambda: "stats: empty@file 503 total 6" in proxy.logs())
    wait_until(lambda: "stats: slow@file 504 total 2" in proxy.logs())
    wait_until(lambda: "stats: slow@file 200 total 4" in proxy.logs())
    wait_until(lambda: "stats: slow@file resends total" in proxy.logs())


def test_duration_bucket_matches_bisect_left_at_and_around_every_bound():
    # The histogram's `le` buckets: the first bound a duration does not exceed.
    for bound in DURATION_BUCKETS:
        for seconds in (bound * 0.999, bound, bound * 1.001):
            assert duration_bucket(seconds) == bisect_left(DURATION_BUCKETS, seconds), seconds
    assert duration_bucket(0.0) == 0
    assert duration_bucket(3600.0) == len(DURATION_BUCKETS)

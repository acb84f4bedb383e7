"""The file provider under load: edits reach every worker quickly and nothing fails."""

from __future__ import annotations

import time

from conftest import Load, lb_config, wait_until


def test_edit_moves_traffic_within_a_second_without_failures(portside, whoami):
    old, new = whoami("old"), whoami("new")
    proxy = portside(lb_config(old), workers=2)
    load = Load(proxy.port, "whoami.localhost")
    try:
        wait_until(lambda: load.seen("old", 0), timeout=5)
        edited_at = time.monotonic()
        proxy.write_dynamic(lb_config(new))
        wait_until(lambda: load.seen("new", edited_at), timeout=1.0)
        switched_at = time.monotonic()
        # keep the load on for a moment after the switch, then check every request
        wait_until(lambda: load.seen("new", switched_at + 1.3), timeout=5)
    finally:
        load.stop()
    print(f"traffic moved {1000 * (switched_at - edited_at):.0f} ms after the edit")
    assert not load.errors, load.errors[:3]
    assert {status for _, status, _ in load.results} == {200}
    # after the last worker acknowledged the new generation, only `new` answers
    late = {n for t, _, n in load.results if t > switched_at + 1.0}
    assert late == {"new"}


def test_invalid_edit_keeps_last_good_config(portside, whoami):
    w1 = whoami("w1")
    proxy = portside(lb_config(w1))
    # the first, valid file is in force before it is broken
    wait_until(lambda: proxy.get("whoami.localhost").status == 200)
    proxy.write_dynamic(
        """
        [http.routers.whoami]
        rule = "Hots(`whoami.localhost`)"
        service = "whoami"
        """
    )
    wait_until(lambda: "http.routers.whoami.rule" in proxy.logs(), timeout=5)
    assert str(proxy.dynamic_path) in proxy.logs()
    assert proxy.get("whoami.localhost").field("Name") == "w1"
    # a later valid edit is applied again
    proxy.write_dynamic(lb_config(w1, host="fixed.localhost"))
    wait_until(lambda: proxy.get("fixed.localhost").status == 200, timeout=5)

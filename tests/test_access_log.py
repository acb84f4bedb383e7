"""The access log: one whole JSON (or CLF) line per request from every worker; USR1 reopens."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from conftest import connect, free_port, lb_config, read_response, wait_until
from observability import Admin, admin_static

FIELDS = {
    "ClientHost",
    "RequestMethod",
    "RequestPath",
    "RequestProtocol",
    "DownstreamStatus",
    "OriginStatus",
    "Duration",
    "RouterName",
    "ServiceName",
    "ServiceURL",
    "RetryAttempts",
    "StartUTC",
}


def _open_in_every_worker(pids: list[int], path: Path) -> bool:
    """Whether every worker has a file open under `path` (a renamed one shows its new name)."""
    return all(
        any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
        for pid in pids
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_json_lines_one_per_request_and_usr1_reopens(portside, whoami, tmp_path):
    backend = whoami("a")
    log_path = tmp_path / "access.log"
    proxy = portside(
        lb_config(backend),
        workers=2,
        extra_static=f'[accessLog]\nfilePath = "{log_path}"\nformat = "json"\n',
    )
    for i in range(100):
        assert proxy.get("whoami.localhost", f"/item/{i}?q=1").status == 200
    assert proxy.get("nothing.localhost", "/missing").status == 404
    wait_until(lambda: len(_lines(log_path)) == 101)
    records = [json.loads(line) for line in _lines(log_path)]  # each line whole and valid
    assert all(set(r) >= FIELDS for r in records)
    served = sorted(
        (r for r in records if r["DownstreamStatus"] == 200), key=lambda r: r["StartUTC"]
    )
    assert [r["RequestPath"] for r in served] == [f"/item/{i}?q=1" for i in range(100)]
    first = served[0]
    assert first["RequestMethod"] == "GET"
    assert first["RequestProtocol"] == "HTTP/1.1"
    assert first["ClientHost"] == "127.0.0.1"
    assert first["OriginStatus"] == 200
    assert first["RouterName"] == first["ServiceName"] == "whoami@file"
    assert first["ServiceURL"] == backend.url
    assert first["RetryAttempts"] == 0
    assert 0 < first["Duration"] < 5e9  # nanoseconds
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["StartUTC"])
    (missing,) = [r for r in records if r["DownstreamStatus"] == 404]
    assert (missing["OriginStatus"], missing["RouterName"]) == (0, "")

    # logrotate: move the file away, then USR1 to the master, which tells every worker.
    rotated = tmp_path / "access.log.1"
    os.rename(log_path, rotated)
    proxy.proc.send_signal(signal.SIGUSR1)
    # Until a worker has reopened, its lines rightly go on into the rotated file.
    wait_until(lambda: _open_in_every_worker(proxy.worker_pids(), log_path))
    for _ in range(20):
        assert proxy.get("whoami.localhost", "/after").status == 200
    wait_until(lambda: len(_lines(log_path)) == 20)
    assert len(_lines(rotated)) == 101
    assert {json.loads(line)["RequestPath"] for line in _lines(log_path)} == {"/after"}


def test_common_log_format(portside, whoami, tmp_path):
    backend = whoami("a")
    log_path = tmp_path / "access.log"
    proxy = portside(lb_config(backend), extra_static=f'[accessLog]\nfilePath = "{log_path}"\n')
    proxy.get("whoami.localhost", "/x", headers={"User-Agent": "tester/1", "Referer": "http://r/"})
    (line,) = wait_until(lambda: _lines(log_path))
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /x HTTP/1\.1" 200 - '
        rf'"http://r/" "tester/1" - "whoami@file" "{re.escape(backend.url)}" \d+ms',
        line,
    ), line


def test_refused_requests_are_logged_and_counted(portside, whoami, tmp_path):
    """A request refused before it is routed still gets its line and its count."""
    log_path = tmp_path / "access.log"
    port = free_port()
    proxy = portside(
        lb_config(whoami("a")),
        extra_static=admin_static(
            port, extra=f'[accessLog]\nfilePath = "{log_path}"\nformat = "json"\n'
        ),
    )
    admin = Admin(proxy, port)
    for raw in (b"GET /no-host HTTP/1.1\r\n\r\n", b"\x16\x03\x01 not http\r\n\r\n"):
        sock, f = connect(proxy.port)
        sock.sendall(raw)
        assert read_response(f).status == 400
        sock.close()
    wait_until(lambda: len(_lines(log_path)) == 2)
    records = [json.loads(line) for line in _lines(log_path)]
    by_path = {r["RequestPath"]: r for r in records}
    assert by_path["/no-host"]["RequestMethod"] == "GET"
    # A request line llhttp could not read: no method is claimed for it.
    assert by_path["-"]["RequestMethod"] == "-"
    assert {r["DownstreamStatus"] for r in records} == {400}
    assert {(r["RouterName"], r["OriginStatus"]) for r in records} == {("", 0)}
    wait_until(lambda: admin.total("portside_requests_total", entrypoint="web", code="400") == 2)

"""Static configuration: defaults, address forms, durations and every problem message."""

from __future__ import annotations

import os
import tomllib

import pytest

from portside.master.durations import parse_duration
from portside.master.errors import ConfigError
from portside.master.static_config import (
    EntryPoint,
    FileProvider,
    ServersTransport,
    load_static,
    parse_address,
    parse_static,
)

SOURCE = "configs/demo.toml"
MINIMAL = '[entryPoints.web]\naddress = ":8000"\n'


def parse(text: str):
    return parse_static(tomllib.loads(text), SOURCE)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (2.5, 2.5),
        (0, 0.0),
        ("10", 10.0),
        ("0s", 0.0),
        ("5s", 5.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("1000000ns", 0.001),
        ("1h1m1s", 3661.0),
        ("+3s", 3.0),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    assert parse_duration(value, key="k", source="f.toml") == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (-1, "must not be negative"),
        ("-5s", "must not be negative"),
        ("abc", "expected a duration"),
        ("", "expected a duration"),
        ("5 s", "expected a duration"),
        ("5d", "expected a duration"),
        ("s", "expected a duration"),
        (True, "got boolean"),
        ([1], "got list"),
        (float("inf"), "expected a duration"),
        (float("nan"), "expected a duration"),
    ],
)
def test_parse_duration_rejects(value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, key="a.b", source="f.toml")
    [problem] = info.value.problems
    assert problem.startswith("f.toml: a.b: ")
    assert fragment in problem


# --- defaults --------------------------------------------------------------------------------


def test_minimal_config_gets_defaults() -> None:
    config = parse(MINIMAL)
    assert config.source == SOURCE
    assert config.entry_points == {
        "web": EntryPoint(name="web", host="0.0.0.0", port=8000, trusted_ips=(), idle_timeout=180.0)
    }
    assert config.worker_count == (os.cpu_count() or 1)
    assert config.servers_transport == ServersTransport(
        dial_timeout=5.0,
        response_header_timeout=None,
        idle_conn_timeout=90.0,
        max_idle_conns_per_host=200,
    )
    assert config.file_provider is None
    assert config.log_level == "INFO"


def test_full_config(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse(
        """
        [entryPoints.web]
        address = "127.0.0.1:8000"
        [entryPoints.web.forwardedHeaders]
        trustedIPs = ["10.0.0.0/8", "192.168.1.7", "172.16.1.1/12", "::1"]
        [entryPoints.web.transport.respondingTimeouts]
        idleTimeout = "1m"

        [entryPoints.admin]
        address = "[::1]:9000"

        [serversTransport]
        maxIdleConnsPerHost = 0
        [serversTransport.forwardingTimeouts]
        dialTimeout = "2s"
        responseHeaderTimeout = 30
        idleConnTimeout = "500ms"

        [providers.file]
        directory = "dynamic"
        watch = false

        [log]
        level = "warning"

        [workers]
        count = 3
        """
    )
    web = config.entry_points["web"]
    assert (web.host, web.port, web.idle_timeout) == ("127.0.0.1", 8000, 60.0)
    # CIDRs are normalised (strict=False drops host bits) and single IPs become /32 or /128.
    assert web.trusted_ips == ("10.0.0.0/8", "192.168.1.7/32", "172.16.0.0/12", "::1/128")
    assert (config.entry_points["admin"].host, config.entry_points["admin"].port) == ("::1", 9000)
    assert config.servers_transport == ServersTransport(2.0, 30.0, 0.5, 0)
    assert config.file_provider == FileProvider(
        filename=None, directory=str(tmp_path / "dynamic"), watch=False
    )
    assert config.log_level == "WARN"
    assert config.worker_count == 3


def test_file_provider_filename_relative_to_cwd(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse(MINIMAL + '[providers.file]\nfilename = "dyn.toml"\n')
    assert config.file_provider == FileProvider(
        filename=str(tmp_path / "dyn.toml"), directory=None, watch=True
    )


def test_zero_response_header_timeout_means_none() -> None:
    text = MINIMAL + '[serversTransport.forwardingTimeouts]\nresponseHeaderTimeout = "0s"\n'
    assert parse(text).servers_transport.response_header_timeout is None


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("debug", "DEBUG"),
        ("Info", "INFO"),
        ("WARN", "WARN"),
        ("warning", "WARN"),
        ("error", "ERROR"),
    ],
)
def test_log_levels(written: str, expected: str) -> None:
    assert parse(MINIMAL + f'[log]\nlevel = "{written}"\n').log_level == expected


# --- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        (":8000", "0.0.0.0", 8000),
        ("127.0.0.1:8000", "127.0.0.1", 8000),
        ("0.0.0.0:1", "0.0.0.0", 1),
        ("[::1]:8000", "::1", 8000),
        ("[::]:443", "::", 443),
        ("[::0001]:80", "::1", 80),
        ("localhost:65535", "localhost", 65535),
        ("proxy.example.com:80", "proxy.example.com", 80),
        (":8000/tcp", "0.0.0.0", 8000),
    ],
)
def test_address_forms(address: str, host: str, port: int) -> None:
    assert parse_address(address) == (host, port)
    ep = parse(f'[entryPoints.web]\naddress = "{address}"\n').entry_points["web"]
    assert (ep.host, ep.port) == (host, port)


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("localhost", "expected HOST:PORT, got 'localhost'"),
        ("8000", "expected HOST:PORT, got '8000'"),
        (":http", "expected HOST:PORT"),
        (":", "expected HOST:PORT"),
        (":-1", "expected HOST:PORT"),
        (":0", "port must be between 1 and 65535, got 0"),
        (":65536", "port must be between 1 and 65535, got 65536"),
        ("::1:8000", "write IPv6 addresses in brackets"),
        ("[::1:8000", "write IPv6 addresses in brackets"),
        ("[localhost]:80", "brackets are only for IPv6"),
        ("bad_host!:80", "invalid host 'bad_host!'"),
        ("10.0.0.300:80", "invalid host '10.0.0.300'"),
        (":53/udp", "only TCP entry points are supported"),
    ],
)
def test_bad_addresses(address: str, fragment: str) -> None:
    [problem] = problems_of(f'[entryPoints.web]\naddress = "{address}"\n')
    assert problem.startswith(f"{SOURCE}: entryPoints.web.address: ")
    assert fragment in problem


# --- problems --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("", "entryPoints", "at least one entry point is required"),
        ("[entryPoints]\n", "entryPoints", "at least one entry point is required"),
        ('entryPoints = "web"\n', "entryPoints", "expected a table, got string 'web'"),
        ("[entryPoints.web]\n", "entryPoints.web.address", "required key is missing"),
        ("[entryPoints]\nweb = 1\n", "entryPoints.web", "expected a table, got integer 1"),
        (
            '[entryPoints.web]\nadress = ":80"\n',
            "entryPoints.web.adress",
            "unknown key (did you mean 'address'?)",
        ),
        ("[entryPoints.web]\naddress = 8000\n", "entryPoints.web.address", "expected a string"),
        ('[entryPoints.web]\naddress = ""\n', "entryPoints.web.address", "must not be empty"),
        (
            MINIMAL + '[entryPoints.web.forwardedHeaders]\ntrustedIPs = ["10.0.0.0/33"]\n',
            "entryPoints.web.forwardedHeaders.trustedIPs[0]",
            "expected an IP address or CIDR network, got '10.0.0.0/33'",
        ),
        (
            MINIMAL + '[entryPoints.web.forwardedHeaders]\ntrustedIPs = ["1.2.3.4", 5]\n',
            "entryPoints.web.forwardedHeaders.trustedIPs[1]",
            "expected a non-empty string, got integer 5",
        ),
        (
            MINIMAL + '[entryPoints.web.forwardedHeaders]\ntrustedIPs = "10.0.0.0/8"\n',
            "entryPoints.web.forwardedHeaders.trustedIPs",
            "expected an array of strings, got string",
        ),
        (
            MINIMAL + "[entryPoints.web.forwardedHeaders]\ninsecure = true\n",
            "entryPoints.web.forwardedHeaders.insecure",
            "unknown key",
        ),
        (
            MINIMAL + '[entryPoints.web.transport.respondingTimeouts]\nidleTimeout = "soon"\n',
            "entryPoints.web.transport.respondingTimeouts.idleTimeout",
            "expected a duration",
        ),
        (
            MINIMAL + "[entryPoints.web.transport.respondingTimeouts]\nidleTimeout = -1\n",
            "entryPoints.web.transport.respondingTimeouts.idleTimeout",
            "must not be negative",
        ),
        (
            '[entryPoints.a]\naddress = ":80"\n[entryPoints.b]\naddress = "0.0.0.0:80"\n',
            "entryPoints.b.address",
            "0.0.0.0:80 conflicts with entryPoints.a (0.0.0.0:80)",
        ),
        (
            '[entryPoints.a]\naddress = ":80"\n[entryPoints.b]\naddress = "127.0.0.1:80"\n',
            "entryPoints.b.address",
            "conflicts with entryPoints.a",
        ),
        (
            '[entryPoints.a]\naddress = "[::1]:80"\n[entryPoints.b]\naddress = "[::]:80"\n',
            "entryPoints.b.address",
            "conflicts with entryPoints.a",
        ),
        (
            MINIMAL + "[serversTransport]\nmaxIdleConnsPerHost = -1\n",
            "serversTransport.maxIdleConnsPerHost",
            "must be >= 0, got -1",
        ),
        (
            MINIMAL + '[serversTransport]\nmaxIdleConnsPerHost = "10"\n',
            "serversTransport.maxIdleConnsPerHost",
            "expected an integer, got string '10'",
        ),
        (
            MINIMAL + "[serversTransport]\nmaxIdleConnsPerHost = true\n",
            "serversTransport.maxIdleConnsPerHost",
            "expected an integer, got boolean True",
        ),
        (
            MINIMAL + "[serversTransport.forwardingTimeouts]\ndialTimeout = 0\n",
            "serversTransport.forwardingTimeouts.dialTimeout",
            "must be greater than 0",
        ),
        (
            MINIMAL + '[serversTransport.forwardingTimeouts]\nidleConnTimeout = "0s"\n',
            "serversTransport.forwardingTimeouts.idleConnTimeout",
            "must be greater than 0",
        ),
        (
            MINIMAL + '[serversTransport.forwardingTimeouts]\ndialTimout = "1s"\n',
            "serversTransport.forwardingTimeouts.dialTimout",
            "unknown key (did you mean 'dialTimeout'?)",
        ),
        (
            MINIMAL + "[serversTransport.forwardingTimeouts]\nresponseHeaderTimeout = []\n",
            "serversTransport.forwardingTimeouts.responseHeaderTimeout",
            "expected a duration",
        ),
        (MINIMAL + "[providers.file]\n", "providers.file", "one of filename or directory"),
        (
            MINIMAL + '[providers.file]\nfilename = "a"\ndirectory = "b"\n',
            "providers.file",
            "set either filename or directory, not both",
        ),
        (
            MINIMAL + '[providers.file]\nfilename = "a"\nwatch = "yes"\n',
            "providers.file.watch",
            "expected a boolean (true or false), got string 'yes'",
        ),
        (
            MINIMAL + '[providers.file]\nfilename = ""\n',
            "providers.file.filename",
            "must not be empty",
        ),
        (MINIMAL + "[providers.dockr]\n", "providers.dockr", "unknown key (did you mean"),
        (MINIMAL + '[workers]\ntimeout = "1s"\n', "workers.timeout", "must be at least 2s"),
        (MINIMAL + "[workers]\ncpuAffinity = 1\n", "workers.cpuAffinity", "expected a boolean"),
        (
            MINIMAL + '[providers.docker]\nendpoint = "/var/run/docker.sock"\n',
            "providers.docker.endpoint",
            "expected unix://PATH or tcp://HOST:PORT",
        ),
        (
            MINIMAL + '[providers.docker]\ndefaultRule = "Hots(`x`)"\n',
            "providers.docker.defaultRule",
            "invalid rule",
        ),
        (
            MINIMAL + '[log]\nlevel = "TRACE"\n',
            "log.level",
            "expected one of DEBUG, INFO, WARN, ERROR, got 'TRACE'",
        ),
        (MINIMAL + '[log]\nformat = "json"\n', "log.format", "unknown key"),
        (MINIMAL + "[workers]\ncount = 0\n", "workers.count", "must be >= 1, got 0"),
        (MINIMAL + "[workers]\ncount = 1.5\n", "workers.count", "expected an integer, got float"),
        (MINIMAL + "[worker]\ncount = 2\n", "worker", "unknown key (did you mean 'workers'?)"),
        (
            MINIMAL + '[entrypoints.web]\naddress = ":81"\n',
            "entrypoints",
            "unknown key (did you mean 'entryPoints'?)",
        ),
    ],
)
def test_problem_messages(text: str, key: str, fragment: str) -> None:
    problems = problems_of(text)
    prefix = f"{SOURCE}: {key}: "
    assert any(p.startswith(prefix) and fragment in p for p in problems), problems


def test_all_problems_are_reported_together() -> None:
    problems = problems_of(
        """
        [entryPoints.web]
        adress = ":80"
        [log]
        level = "loud"
        [workers]
        count = -2
        """
    )
    keys = [p.split(": ")[1] for p in problems]
    assert keys == [
        "entryPoints.web.adress",
        "entryPoints.web.address",
        "log.level",
        "workers.count",
    ]


def test_quoted_names_are_quoted_in_keys() -> None:
    [problem] = problems_of('[entryPoints."my web"]\naddress = "nowhere"\n')
    assert problem.startswith(f'{SOURCE}: entryPoints."my web".address: ')


def test_config_error_str_joins_problems() -> None:
    error = ConfigError(["a: b: c", "d: e: f"])
    assert str(error) == "a: b: c\nd: e: f"
    assert error.problems == ["a: b: c", "d: e: f"]


# --- files -----------------------------------------------------------------------------------


def test_load_static_reads_file(tmp_path) -> None:
    path = tmp_path / "static.toml"
    path.write_text(MINIMAL)
    assert load_static(str(path)).source == str(path)


def test_load_static_missing_file(tmp_path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        load_static(path)
    [problem] = info.value.problems
    assert problem == f"{path}: cannot read file: No such file or directory"


def test_load_static_syntax_error_names_line_and_column(tmp_path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[entryPoints.web]\naddress = ":80"\nthis is not toml\n')
    with pytest.raises(ConfigError) as info:
        load_static(str(path))
    [problem] = info.value.problems
    assert problem.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in problem and "column" in problem


def test_load_static_not_utf8(tmp_path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'# caf\xe9\n[entryPoints.web]\naddress = ":80"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_static(str(path))

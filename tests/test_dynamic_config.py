"""Dynamic configuration (file provider): parsing, merging a directory, every problem message.

Rule validation uses portside.worker.rules; the rules here are either obviously
valid (Host(`a.localhost`)) or use an unknown matcher (Hots(`x`)).
"""

from __future__ import annotations

import logging
import tomllib

import pytest

from portside.master.dynamic_config import (
    DynamicConfig,
    HealthCheckConf,
    MiddlewareConf,
    PassiveHealthConf,
    RetryConf,
    RouterConf,
    ServerConf,
    ServiceConf,
    load_dynamic_dir,
    load_dynamic_file,
    load_file_provider,
    parse_dynamic,
    parse_server_url,
)
from portside.master.errors import ConfigError
from portside.master.static_config import FileProvider

SOURCE = "dynamic/demo.toml"
RULE = "Host(`a.localhost`)"
BAD_RULE = "Hots(`x`)"
SERVICE = '[http.services.svc.loadBalancer]\nservers = [{ url = "http://127.0.0.1:9001" }]\n'
ROUTER = f'[http.routers.r]\nrule = "{RULE}"\nservice = "svc"\n'


def parse(text: str, source: str = SOURCE) -> DynamicConfig:
    return parse_dynamic(tomllib.loads(text), source)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


def test_full_example() -> None:
    config = parse(
        f"""
        [http.routers.whoami]
        rule = "{RULE}"
        service = "whoami"
        entryPoints = ["web", "admin"]
        priority = 10

        [http.routers.other]
        rule = "{RULE}"
        service = "whoami@docker"

        [http.services.whoami.loadBalancer]
        servers = [
            {{ url = "http://127.0.0.1:9001" }},
            {{ url = "http://127.0.0.1:9002", weight = 3 }},
            {{ url = "http://[::1]:9003", weight = 0 }},
            {{ url = "http://Backend.local/" }},
        ]
        """
    )
    assert config.routers == {
        "whoami": RouterConf("whoami", RULE, "whoami", ("web", "admin"), 10),
        "other": RouterConf("other", RULE, "whoami@docker", None, None),
    }
    assert config.services == {
        "whoami": ServiceConf(
            "whoami",
            (
                ServerConf("http://127.0.0.1:9001", "http", "127.0.0.1", 9001, 1),
                ServerConf("http://127.0.0.1:9002", "http", "127.0.0.1", 9002, 3),
                ServerConf("http://[::1]:9003", "http", "::1", 9003, 0),
                ServerConf("http://Backend.local/", "http", "backend.local", 80, 1),
            ),
        )
    }


@pytest.mark.parametrize("text", ["", "[http]\n", "[http.routers]\n[http.services]\n"])
def test_empty_configs(text: str) -> None:
    assert parse(text) == DynamicConfig.EMPTY


def test_service_without_servers_is_allowed() -> None:
    config = parse("[http.services.empty.loadBalancer]\nservers = []\n")
    assert config.services == {"empty": ServiceConf("empty", ())}
    assert parse("[http.services.empty.loadBalancer]\n").services["empty"].servers == ()


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:9001", ("http", "127.0.0.1", 9001)),
        ("http://127.0.0.1", ("http", "127.0.0.1", 80)),
        ("HTTP://whoami:8080/", ("http", "whoami", 8080)),
        ("http://[2001:db8::5]:81", ("http", "2001:db8::5", 81)),
        ("http://my_service_1:80", ("http", "my_service_1", 80)),
    ],
)
def test_server_url_forms(url: str, origin: tuple[str, str, int]) -> None:
    assert parse_server_url(url) == origin


SERVERS = "http.services.svc.loadBalancer.servers"


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        # top level and http
        ("[htp.routers.r]\n", "htp", "unknown key (did you mean 'http'?)"),
        ('http = "x"\n', "http", "expected a table, got string 'x'"),
        ("[http.router.r]\n", "http.router", "unknown key (did you mean 'routers'?)"),
        ("[http.serversTransports.t]\n", "http.serversTransports", "unknown key"),
        # routers
        (f'[http.routers.r]\nservice = "svc"\n{SERVICE}', "http.routers.r.rule", "required"),
        (f'[http.routers.r]\nrule = "{RULE}"\n', "http.routers.r.service", "required"),
        (
            f'[http.routers.r]\nrule = "{RULE}"\nservice = "nope"\n{SERVICE}',
            "http.routers.r.service",
            "unknown service 'nope'",
        ),
        (
            f'[http.routers.r]\nrule = "{RULE}"\nservice = "svx"\n{SERVICE}',
            "http.routers.r.service",
            "unknown service 'svx' (did you mean 'svc'?)",
        ),
        (
            f'[http.routers.r]\nrule = "{RULE}"\nservice = "svc@"\n{SERVICE}',
            "http.routers.r.service",
            "expected 'name' or 'name@provider', got 'svc@'",
        ),
        (
            f'[http.routers.r]\nrule = "{RULE}"\nservice = "@docker"\n',
            "http.routers.r.service",
            "expected 'name' or 'name@provider'",
        ),
        (ROUTER + SERVICE + "[http.routers.r2]\n", "http.routers.r2.rule", "required"),
        (
            f'[http.routers."a@b"]\nrule = "{RULE}"\nservice = "svc"\n{SERVICE}',
            'http.routers."a@b"',
            "name must not contain '@'",
        ),
        (
            f'{ROUTER}[http.services."svc@file".loadBalancer]\n',
            'http.services."svc@file"',
            "name must not contain '@'",
        ),
        (SERVICE + ROUTER + 'rul = "x"\n', "http.routers.r.rul", "(did you mean 'rule'?)"),
        (SERVICE + ROUTER + "rule2 = 1\n", "http.routers.r.rule2", "unknown key"),
        (
            f'[http.routers.r]\nrule = 42\nservice = "svc"\n{SERVICE}',
            "http.routers.r.rule",
            "expected a string, got integer 42",
        ),
        (
            f'[http.routers.r]\nrule = " "\nservice = "svc"\n{SERVICE}',
            "http.routers.r.rule",
            "must not be empty",
        ),
        (SERVICE + ROUTER + "priority = -1\n", "http.routers.r.priority", "must be >= 0, got -1"),
        (
            SERVICE + ROUTER + 'priority = "high"\n',
            "http.routers.r.priority",
            "expected an integer, got string 'high'",
        ),
        (
            SERVICE + ROUTER + 'entryPoints = "web"\n',
            "http.routers.r.entryPoints",
            "expected an array of strings, got string 'web'",
        ),
        (
            SERVICE + ROUTER + "entryPoints = []\n",
            "http.routers.r.entryPoints",
            "must not be empty",
        ),
        (
            SERVICE + ROUTER + 'entryPoints = ["web", 3]\n',
            "http.routers.r.entryPoints[1]",
            "expected a non-empty string, got integer 3",
        ),
        ("[http.routers]\nr = 1\n", "http.routers.r", "expected a table, got integer 1"),
        # services
        (ROUTER + "[http.services.svc]\n", "http.services.svc.loadBalancer", "required"),
        (
            ROUTER + "[http.services.svc.loadBalancr]\n",
            "http.services.svc.loadBalancr",
            "unknown key (did you mean 'loadBalancer'?)",
        ),
        (
            ROUTER + "[http.services.svc.weighted]\nservices = []\n",
            "http.services.svc.weighted",
            "weighted services are not supported yet",
        ),
        (
            ROUTER + "[http.services.svc.mirroring]\n",
            "http.services.svc.mirroring",
            "mirroring services are not supported yet",
        ),
        (
            ROUTER + SERVICE + 'server = [{ url = "http://a" }]\n',
            "http.services.svc.loadBalancer.server",
            "unknown key (did you mean 'servers'?)",
        ),
        (
            ROUTER + '[http.services.svc.loadBalancer]\nservers = { url = "http://a" }\n',
            SERVERS,
            "expected an array of tables, got table",
        ),
        (
            ROUTER + '[http.services.svc.loadBalancer]\nservers = ["http://a"]\n',
            f"{SERVERS}[0]",
            "expected a table with a url, got string 'http://a'",
        ),
        (
            ROUTER + "[http.services.svc.loadBalancer]\nservers = [{ weight = 1 }]\n",
            f"{SERVERS}[0].url",
            "required",
        ),
        (
            ROUTER + '[http.services.svc.loadBalancer]\nservers = [{ url = "http://a", w = 1 }]\n',
            f"{SERVERS}[0].w",
            "unknown key",
        ),
        (
            ROUTER
            + '[http.services.svc.loadBalancer]\nservers = [{ url = "http://a", weight = -1 }]\n',
            f"{SERVERS}[0].weight",
            "must be >= 0, got -1",
        ),
        (
            ROUTER
            + '[http.services.svc.loadBalancer]\nservers = [{ url = "http://a", weight = 1.5 }]\n',
            f"{SERVERS}[0].weight",
            "expected an integer, got float 1.5",
        ),
        (
            ROUTER
            + "[http.services.svc.loadBalancer]\n"
            + 'servers = [{ url = "http://a:80" }, { url = "http://b" }, { url = "http://A/" }]\n',
            f"{SERVERS}[2].url",
            f"duplicate of {SERVERS}[0] (a:80)",
        ),
    ],
)
def test_problem_messages(text: str, key: str, fragment: str) -> None:
    problems = problems_of(text)
    prefix = f"{SOURCE}: {key}: "
    assert any(p.startswith(prefix) and fragment in p for p in problems), problems


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("https://127.0.0.1:9443", "https upstreams are not supported yet"),
        ("ftp://a", "expected a URL like 'http://HOST:PORT', got 'ftp://a'"),
        ("127.0.0.1:9001", "expected a URL like 'http://HOST:PORT'"),
        ("http://", "expected a URL like 'http://HOST:PORT'"),
        ("http://:80", "invalid host"),
        ("http://a/api", "must not have a path, query or fragment"),
        ("http://a?x=1", "must not have a path, query or fragment"),
        ("http://a#frag", "must not have a path, query or fragment"),
        ("http://user:pw@a", "credentials in server URLs are not supported"),
        ("http://a:0", "port must be between 1 and 65535"),
        ("http://a:99999", "invalid URL 'http://a:99999'"),
        ("http://a:http", "invalid URL"),
        ("http://::1:8080", "invalid URL"),
        ("http://[::1", "invalid URL"),
        ("http://bad host", "invalid host"),
    ],
)
def test_bad_server_urls(url: str, fragment: str) -> None:
    text = ROUTER + f'[http.services.svc.loadBalancer]\nservers = [{{ url = "{url}" }}]\n'
    [problem] = problems_of(text)
    assert problem.startswith(f"{SOURCE}: {SERVERS}[0].url: ")
    assert fragment in problem


def test_invalid_rule_quotes_rule_error() -> None:
    from portside.worker.rules import RuleError, parse_rule

    with pytest.raises(RuleError) as expected:
        parse_rule(BAD_RULE)
    [problem] = problems_of(f'[http.routers.r]\nrule = "{BAD_RULE}"\nservice = "svc"\n{SERVICE}')
    assert problem.startswith(f"{SOURCE}: http.routers.r.rule: ")
    assert str(expected.value) in problem


def test_all_problems_are_reported_together() -> None:
    problems = problems_of(
        f"""
        [http.routers.a]
        rule = "{BAD_RULE}"
        service = "missing"
        [http.routers.b]
        rule = "{RULE}"
        service = "svc"
        priority = -5
        [http.services.svc.loadBalancer]
        servers = [{{ url = "https://x" }}]
        """
    )
    keys = sorted(p.split(": ")[1] for p in problems)
    assert keys == [
        "http.routers.a.rule",
        "http.routers.a.service",
        "http.routers.b.priority",
        f"{SERVERS}[0].url",
    ]


def test_reference_to_invalid_service_is_not_reported_as_unknown() -> None:
    # The service exists but is broken: one problem (the URL), not a second "unknown service".
    problems = problems_of(ROUTER + '[http.services.svc.loadBalancer]\nservers = [{ url = "x" }]\n')
    assert len(problems) == 1 and "unknown service" not in problems[0]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "[http.middlewares.strip.stripPrefix]\nprefixes = ['/a']\n",
            "http.middlewares.strip.stripPrefix",
        ),
        (ROUTER + SERVICE + "[http.routers.r.tls]\n", "http.routers.r.tls"),
        (
            ROUTER + SERVICE + "[http.services.svc.loadBalancer.healthCheck]\n"
            "path = '/h'\nfollowRedirects = false\n",
            "http.services.svc.loadBalancer.healthCheck.followRedirects",
        ),
        (
            ROUTER + SERVICE + "[http.services.svc.loadBalancer.sticky.cookie]\n",
            "http.services.svc.loadBalancer.sticky",
        ),
        (
            ROUTER + "[http.services.svc.loadBalancer]\npassHostHeader = false\n",
            "http.services.svc.loadBalancer.passHostHeader",
        ),
        (
            ROUTER + "[http.services.svc.loadBalancer]\nserversTransport = 'x'\n",
            "http.services.svc.loadBalancer.serversTransport",
        ),
        ("[tcp.routers.t]\nrule = 'HostSNI(`*`)'\n", "tcp"),
        ("[udp.services.u]\n", "udp"),
        ("[[tls.certificates]]\ncertFile = 'a.pem'\n", "tls"),
    ],
)
def test_unsupported_traefik_sections_warn(text: str, key: str, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="portside.config"):
        parse(text)
    messages = [r.getMessage() for r in caplog.records if r.name == "portside.config"]
    assert f"{SOURCE}: {key}: not supported yet, ignored" in messages


# --- middlewares, retries, health checks ------------------------------------------------------

MIDDLEWARE = "[http.middlewares.retry-3.retry]\nattempts = 3\n"
BALANCER = "http.services.svc.loadBalancer"


def test_middlewares_and_service_options() -> None:
    config = parse(
        f"""
        [http.routers.r]
        rule = "{RULE}"
        service = "svc"
        middlewares = ["retry-3", "strip", "auth@docker"]

        [http.middlewares.retry-3.retry]
        attempts = 3
        initialInterval = "100ms"

        [http.middlewares.strip.stripPrefix]
        prefixes = ["/api"]

        [http.services.svc.loadBalancer]
        servers = [{{ url = "http://127.0.0.1:9001" }}]

        [http.services.svc.loadBalancer.retry]
        attempts = 2

        [http.services.svc.loadBalancer.passiveHealthCheck]
        maxFailedAttempts = 5
        failureWindow = "30s"

        [http.services.svc.loadBalancer.healthCheck]
        path = "/health?full=1"
        interval = "10s"
        timeout = 2
        scheme = "HTTP"
        hostname = "svc.internal"
        status = 204
        """
    )
    assert config.routers["r"].middlewares == ("retry-3", "strip", "auth@docker")
    assert config.middlewares == {
        "retry-3": MiddlewareConf("retry-3", RetryConf(3, 0.1, False)),
        "strip": MiddlewareConf("strip", None, "stripPrefix"),
    }
    service = config.services["svc"]
    assert service.retry == RetryConf(attempts=2, initial_interval=0.0, disabled=False)
    assert service.passive == PassiveHealthConf(max_failed_attempts=5, failure_window=30.0)
    assert service.health_check == HealthCheckConf(
        path="/health?full=1",
        interval=10.0,
        timeout=2.0,
        scheme="http",
        hostname="svc.internal",
        status=204,
    )


def test_service_option_defaults() -> None:
    config = parse(
        SERVICE + "[http.services.svc.loadBalancer.healthCheck]\npath = '/h'\n"
        "[http.services.svc.loadBalancer.retry]\ndisabled = true\n"
    )
    service = config.services["svc"]
    # Traefik's defaults for the health check; 3 failures and 10 s for passive health.
    assert service.health_check == HealthCheckConf("/h", 30.0, 5.0, "http", None, None)
    assert service.passive == PassiveHealthConf(3, 10.0)
    assert service.retry == RetryConf(None, 0.0, True)
    plain = parse(SERVICE).services["svc"]
    assert (plain.retry, plain.passive, plain.health_check) == (None, PassiveHealthConf(), None)
    assert parse(SERVICE + ROUTER).routers["r"].middlewares == ()


def test_retry_attempts_zero_is_accepted() -> None:
    config = parse(
        "[http.middlewares.off.retry]\nattempts = 0\n"
        + SERVICE
        + "[http.services.svc.loadBalancer.retry]\nattempts = 0\n"
    )
    assert config.middlewares["off"].retry == RetryConf(0, 0.0, False)
    assert config.services["svc"].retry == RetryConf(0, 0.0, False)


def test_middleware_may_be_defined_in_another_file(tmp_path) -> None:
    (tmp_path / "a.toml").write_text(ROUTER + 'middlewares = ["retry-3"]\n' + SERVICE)
    (tmp_path / "b.toml").write_text(MIDDLEWARE)
    config = load_dynamic_dir(str(tmp_path))
    assert set(config.middlewares) == {"retry-3"}


def test_reference_to_invalid_middleware_is_not_reported_as_unknown() -> None:
    text = ROUTER + 'middlewares = ["m"]\n' + SERVICE + "[http.middlewares.m.retry]\n"
    assert problems_of(text) == [
        f"{SOURCE}: http.middlewares.m.retry.attempts: required key is missing"
    ]


def test_router_using_an_ignored_middleware_warns_once(caplog) -> None:
    text = (
        ROUTER
        + 'middlewares = ["strip"]\n'
        + '[http.routers.r2]\nrule = "Host(`b`)"\nservice = "svc"\nmiddlewares = ["strip"]\n'
        + SERVICE
        + "[http.middlewares.strip.stripPrefix]\nprefixes = ['/a']\n"
    )
    with caplog.at_level(logging.WARNING, logger="portside.config"):
        config = parse(text)
    assert config.routers["r"].middlewares == config.routers["r2"].middlewares == ("strip",)
    assert [r.getMessage() for r in caplog.records] == [
        f"{SOURCE}: http.middlewares.strip.stripPrefix: not supported yet, ignored"
    ]


MW = "http.middlewares"
ROUTER_MW = SERVICE + ROUTER + "middlewares = "


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        # router references
        (ROUTER_MW + '["nope"]\n', "http.routers.r.middlewares", "unknown middleware 'nope'"),
        (
            ROUTER_MW + '["retry3"]\n' + MIDDLEWARE,
            "http.routers.r.middlewares",
            "unknown middleware 'retry3' (did you mean 'retry-3'?)",
        ),
        (
            ROUTER_MW + '["m@"]\n',
            "http.routers.r.middlewares[0]",
            "expected 'name' or 'name@provider', got 'm@'",
        ),
        (ROUTER_MW + '"retry-3"\n' + MIDDLEWARE, "http.routers.r.middlewares", "expected an array"),
        (ROUTER_MW + '[""]\n', "http.routers.r.middlewares[0]", "expected a non-empty string"),
        # middlewares
        ("[http.middlewares.m]\n", f"{MW}.m", "empty middleware: expected a type"),
        ("[http.middlewares.m.retyr]\n", f"{MW}.m.retyr", "unknown key (did you mean 'retry'?)"),
        (
            MIDDLEWARE.replace("retry-3", "m") + "[http.middlewares.m.headers]\n",
            f"{MW}.m",
            "one type per middleware, got retry, headers",
        ),
        ('[http.middlewares."m@x".retry]\nattempts = 1\n', f'{MW}."m@x"', "must not contain '@'"),
        ("[http.middlewares.m.retry]\n", f"{MW}.m.retry.attempts", "required key is missing"),
        (
            "[http.middlewares.m.retry]\nattempts = -1\n",
            f"{MW}.m.retry.attempts",
            "must be >= 0, got -1",
        ),
        (
            "[http.middlewares.m.retry]\nattempts = '3'\n",
            f"{MW}.m.retry.attempts",
            "expected an integer, got string '3'",
        ),
        (
            "[http.middlewares.m.retry]\nattempts = 3\ninitialInterval = 'soon'\n",
            f"{MW}.m.retry.initialInterval",
            "expected a duration",
        ),
        (
            "[http.middlewares.m.retry]\nattempts = 3\ndisabled = true\n",
            f"{MW}.m.retry.disabled",
            "unknown key",
        ),
        # service retry
        (
            SERVICE + f"[{BALANCER}.retry]\nattempts = -2\n",
            f"{BALANCER}.retry.attempts",
            "must be >= 0, got -2",
        ),
        (
            SERVICE + f"[{BALANCER}.retry]\ndisabled = 'yes'\n",
            f"{BALANCER}.retry.disabled",
            "expected a boolean (true or false), got string 'yes'",
        ),
        (
            SERVICE + f"[{BALANCER}.retry]\nattempt = 2\n",
            f"{BALANCER}.retry.attempt",
            "unknown key (did you mean 'attempts'?)",
        ),
        (SERVICE + "retry = 3\n", f"{BALANCER}.retry", "expected a table, got integer 3"),
        # passive health
        (
            SERVICE + f"[{BALANCER}.passiveHealthCheck]\nmaxFailedAttempts = 0\n",
            f"{BALANCER}.passiveHealthCheck.maxFailedAttempts",
            "must be >= 1, got 0",
        ),
        (
            SERVICE + f"[{BALANCER}.passiveHealthCheck]\nfailureWindow = '0s'\n",
            f"{BALANCER}.passiveHealthCheck.failureWindow",
            "must be greater than 0, got '0s'",
        ),
        (
            SERVICE + f"[{BALANCER}.passiveHealthCheck]\nfailureWindow = '-1s'\n",
            f"{BALANCER}.passiveHealthCheck.failureWindow",
            "must not be negative",
        ),
        # active health
        (SERVICE + f"[{BALANCER}.healthCheck]\n", f"{BALANCER}.healthCheck.path", "required"),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = 'health'\n",
            f"{BALANCER}.healthCheck.path",
            "expected a path starting with '/' without spaces, got 'health'",
        ),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = '/a b'\n",
            f"{BALANCER}.healthCheck.path",
            "without spaces",
        ),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = '/h'\ninterval = 0\n",
            f"{BALANCER}.healthCheck.interval",
            "must be greater than 0, got 0",
        ),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = '/h'\ntimeout = '5 s'\n",
            f"{BALANCER}.healthCheck.timeout",
            "expected a duration",
        ),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = '/h'\nscheme = 'https'\n",
            f"{BALANCER}.healthCheck.scheme",
            "only http is supported, got 'https'",
        ),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = '/h'\nmode = 'grpc'\n",
            f"{BALANCER}.healthCheck.mode",
            "only http is supported, got 'grpc'",
        ),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = '/h'\nhostname = 'a b'\n",
            f"{BALANCER}.healthCheck.hostname",
            "expected a host name, got 'a b'",
        ),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = '/h'\nstatus = 99\n",
            f"{BALANCER}.healthCheck.status",
            "expected an HTTP status between 100 and 599, got 99",
        ),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = '/h'\nstatus = '200'\n",
            f"{BALANCER}.healthCheck.status",
            "expected an integer, got string '200'",
        ),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = '/h'\nport = 8080\n",
            f"{BALANCER}.healthCheck.port",
            "not supported yet: probes go to each server's own port",
        ),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = '/h'\nheaders = {{ X = 'y' }}\n",
            f"{BALANCER}.healthCheck.headers",
            "not supported yet",
        ),
        (
            SERVICE + f"[{BALANCER}.healthCheck]\npath = '/h'\nintervall = '1s'\n",
            f"{BALANCER}.healthCheck.intervall",
            "unknown key (did you mean 'interval'?)",
        ),
    ],
)
def test_middleware_and_service_option_problems(text: str, key: str, fragment: str) -> None:
    problems = problems_of(text)
    prefix = f"{SOURCE}: {key}: "
    assert any(p.startswith(prefix) and fragment in p for p in problems), problems


def test_schema_round_trip() -> None:
    """What the discovery process sends the master parses back to the same config."""
    from portside.master.discovery import to_traefik_schema

    config = parse(
        f"""
        [http.routers.r]
        rule = "{RULE}"
        service = "svc"
        entryPoints = ["web"]
        priority = 4
        middlewares = ["retry-3", "strip", "other@docker"]
        [http.routers.plain]
        rule = "{RULE}"
        service = "svc@docker"
        {MIDDLEWARE}
        initialInterval = "250ms"
        [http.middlewares.strip.stripPrefix]
        prefixes = ["/api"]
        [http.services.svc.loadBalancer]
        servers = [{{ url = "http://127.0.0.1:9001", weight = 2 }}, {{ url = "http://[::1]" }}]
        [http.services.svc.loadBalancer.retry]
        disabled = true
        [http.services.svc.loadBalancer.passiveHealthCheck]
        failureWindow = "1m"
        [http.services.svc.loadBalancer.healthCheck]
        path = "/h"
        status = 200
        hostname = "a.local"
        [http.services.bare.loadBalancer]
        [http.services.tuned.loadBalancer.retry]
        attempts = 2
        initialInterval = 1
        [http.services.tuned.loadBalancer.healthCheck]
        path = "/"
        """
    )
    schema = to_traefik_schema(config)
    assert schema == config.schema()
    assert parse_dynamic(schema, "provider file") == config
    assert parse_dynamic(DynamicConfig.EMPTY.schema(), "x") == DynamicConfig.EMPTY


# --- files and directories --------------------------------------------------------------------


def test_load_dynamic_file(tmp_path) -> None:
    path = tmp_path / "dyn.toml"
    path.write_text(ROUTER + SERVICE)
    assert set(load_dynamic_file(str(path)).routers) == {"r"}


def test_load_dynamic_file_errors_name_the_file(tmp_path) -> None:
    path = tmp_path / "dyn.toml"
    path.write_text(ROUTER)
    with pytest.raises(ConfigError) as info:
        load_dynamic_file(str(path))
    assert info.value.problems == [f"{path}: http.routers.r.service: unknown service 'svc'"]


def test_load_dynamic_file_syntax_error(tmp_path) -> None:
    path = tmp_path / "dyn.toml"
    path.write_text("[http.routers.r\n")
    with pytest.raises(ConfigError) as info:
        load_dynamic_file(str(path))
    [problem] = info.value.problems
    assert problem.startswith(f"{path}: invalid TOML: ") and "line 1" in problem


def test_load_dynamic_dir_merges_sorted_toml_files(tmp_path) -> None:
    # The router in a.toml uses a service from b.toml: the directory is one configuration.
    (tmp_path / "a.toml").write_text(ROUTER)
    (tmp_path / "b.toml").write_text(SERVICE)
    (tmp_path / "notes.txt").write_text("not toml at all [")
    (tmp_path / ".#a.toml").write_text("editor lock file [")
    (tmp_path / "sub.toml").mkdir()
    config = load_dynamic_dir(str(tmp_path))
    assert set(config.routers) == {"r"} and set(config.services) == {"svc"}


def test_load_dynamic_dir_empty(tmp_path) -> None:
    assert load_dynamic_dir(str(tmp_path)) == DynamicConfig.EMPTY


def test_load_dynamic_dir_duplicate_names_name_both_files(tmp_path) -> None:
    (tmp_path / "a.toml").write_text(ROUTER + SERVICE)
    (tmp_path / "b.toml").write_text(ROUTER + SERVICE)
    with pytest.raises(ConfigError) as info:
        load_dynamic_dir(str(tmp_path))
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    assert info.value.problems == [
        f"{b}: http.routers.r: already defined in {a}",
        f"{b}: http.services.svc: already defined in {a}",
    ]


def test_load_dynamic_dir_reports_every_file(tmp_path) -> None:
    (tmp_path / "a.toml").write_text("[http.routers.r\n")
    (tmp_path / "b.toml").write_text("[http.services.svc.loadBalancer]\nservers = 3\n")
    with pytest.raises(ConfigError) as info:
        load_dynamic_dir(str(tmp_path))
    problems = info.value.problems
    assert problems[0].startswith(f"{tmp_path / 'a.toml'}: invalid TOML")
    assert problems[1].startswith(f"{tmp_path / 'b.toml'}: {SERVERS}: expected an array")


def test_load_dynamic_dir_missing(tmp_path) -> None:
    path = str(tmp_path / "nope")
    with pytest.raises(ConfigError) as info:
        load_dynamic_dir(path)
    assert info.value.problems == [f"{path}: cannot read directory: No such file or directory"]


def test_load_file_provider_dispatches(tmp_path) -> None:
    (tmp_path / "dyn.toml").write_text(SERVICE)
    by_file = load_file_provider(FileProvider(str(tmp_path / "dyn.toml"), None, True))
    by_dir = load_file_provider(FileProvider(None, str(tmp_path), True))
    assert by_file == by_dir and set(by_file.services) == {"svc"}

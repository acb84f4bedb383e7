"""Tests for portside.worker.rules: Traefik rule parsing, hosts extraction, matching."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from portside.worker.rules import Rule, RuleError, default_priority, parse_rule


@dataclass
class Request:
    """A minimal RequestView."""

    host: str = "example.com"
    method: str = "GET"
    path: str = "/"
    query: str = ""
    client_ip: str = "127.0.0.1"
    headers: dict[str, list[str]] = field(default_factory=dict)

    def header_values(self, name: str) -> list[str]:
        return self.headers.get(name, [])


class Untouchable(Request):
    """A request whose headers must not be looked at."""

    def header_values(self, name: str) -> list[str]:
        raise AssertionError("header_values called; && / || did not short-circuit")


def routes(rule: Rule, request: Request) -> bool:
    """Decide as the proxy does: host lookup first, then the predicate."""
    if rule.hosts is not None and request.host not in rule.hosts:
        return False
    return rule.match is None or rule.match(request)


def matches(text: str, **request: object) -> bool:
    """Evaluate the rule's whole predicate, which must exist."""
    rule = parse_rule(text)
    assert rule.match is not None
    return rule.match(Request(**request))


# --- Matchers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "request_fields", "expected"),
    [
        # Host (checked through the predicate by pairing it with a matcher that is always true)
        ("Host(`example.com`) && PathPrefix(`/`)", {}, True),
        ("Host(`other.com`) && PathPrefix(`/`)", {}, False),
        ("Host(`EXAMPLE.com`) && PathPrefix(`/`)", {}, True),
        ("Host(`a.com`, `example.com`) && PathPrefix(`/`)", {}, True),
        # HostRegexp, v3: a case-insensitive search
        (r"HostRegexp(`^api\.`)", {"host": "api.example.com"}, True),
        (r"HostRegexp(`^API\.`)", {"host": "api.example.com"}, True),
        (r"HostRegexp(`\.example\.com$`)", {"host": "api.example.org"}, False),
        (r"HostRegexp(`^[a-z]{3}\.example\.com$`)", {"host": "api.example.com"}, True),
        (r"HostRegexp(`^[a-z]{3}\.example\.com$`)", {"host": "apis.example.com"}, False),
        # HostRegexp, v2 templates: the whole host must match
        ("HostRegexp(`{sub:[a-z]+}.example.com`)", {"host": "api.example.com"}, True),
        ("HostRegexp(`{sub:[a-z]+}.example.com`)", {"host": "a.b.example.com"}, False),
        ("HostRegexp(`{sub:[a-z]+}.example.com`)", {"host": "api.example.com.evil"}, False),
        ("HostRegexp(`{sub:[a-z]+}.example.com`)", {"host": "apiXexample.com"}, False),
        ("HostRegexp(`{sub}.example.com`)", {"host": "x-1.example.com"}, True),
        ("HostRegexp(`{sub}.example.com`)", {"host": "a.b.example.com"}, False),
        ("HostRegexp(`{id:[0-9]{2}}.example.com`)", {"host": "42.example.com"}, True),
        ("HostRegexp(`{id:[0-9]{2}}.example.com`)", {"host": "420.example.com"}, False),
        ("HostRegexp(`{a}.one.com`, `{b}.two.com`)", {"host": "x.two.com"}, True),
        ("HostRegexp(`{a}.one.com`, `{b}.two.com`)", {"host": "x.three.com"}, False),
        # Path
        ("Path(`/api`)", {"path": "/api"}, True),
        ("Path(`/api`)", {"path": "/api/"}, False),
        ("Path(`/api`)", {"path": "/API"}, False),
        ("Path(`/a`, `/b`)", {"path": "/b"}, True),
        ("Path(`/user/{id:[0-9]+}`)", {"path": "/user/42"}, True),
        ("Path(`/user/{id:[0-9]+}`)", {"path": "/user/42/edit"}, False),
        ("Path(`/user/{name}`)", {"path": "/user/bob"}, True),
        ("Path(`/user/{name}`)", {"path": "/user/bob/x"}, False),
        ("Path(`/file.{ext}`)", {"path": "/fileXjson"}, False),
        ("Path(`/{id`)", {"path": "/{id"}, True),
        # PathPrefix
        ("PathPrefix(`/api`)", {"path": "/api/users"}, True),
        ("PathPrefix(`/api`)", {"path": "/ap"}, False),
        ("PathPrefix(`/api/{version:v[0-9]+}`)", {"path": "/api/v2/users"}, True),
        ("PathPrefix(`/api/{version:v[0-9]+}`)", {"path": "/api/latest"}, False),
        ("PathPrefix(`/api/{version:v[0-9]+}`)", {"path": "/x/api/v2"}, False),
        # PathRegexp: a search, case-sensitive
        (r"PathRegexp(`\.(jpe?g|png)$`)", {"path": "/img/cat.jpeg"}, True),
        (r"PathRegexp(`\.(jpe?g|png)$`)", {"path": "/img/cat.PNG"}, False),
        # Method
        ("Method(`get`)", {"method": "GET"}, True),
        ("Method(`POST`, `PUT`)", {"method": "PUT"}, True),
        ("Method(`POST`, `PUT`)", {"method": "GET"}, False),
        # Header and its v2 name Headers
        ("Header(`X-Env`, `prod`)", {"headers": {"x-env": ["prod"]}}, True),
        ("Header(`X-Env`, `prod`)", {"headers": {"x-env": ["dev", "prod"]}}, True),
        ("Header(`X-Env`, `prod`)", {"headers": {"x-env": ["Prod"]}}, False),
        ("Header(`X-Env`, `prod`)", {}, False),
        ("Headers(`x-env`, `prod`)", {"headers": {"x-env": ["prod"]}}, True),
        # HeaderRegexp and its v2 name HeadersRegexp
        ("HeaderRegexp(`User-Agent`, `curl/`)", {"headers": {"user-agent": ["curl/8.0"]}}, True),
        ("HeaderRegexp(`User-Agent`, `^curl/`)", {"headers": {"user-agent": ["x curl/8"]}}, False),
        ("HeaderRegexp(`User-Agent`, `curl`)", {}, False),
        ("HeadersRegexp(`Accept`, `json`)", {"headers": {"accept": ["text/html", "a/json"]}}, True),
        # Query, v3 forms
        ("Query(`mobile`, `true`)", {"query": "a=1&mobile=true"}, True),
        ("Query(`mobile`, `true`)", {"query": "mobile=false"}, False),
        ("Query(`mobile`, `true`)", {"query": ""}, False),
        ("Query(`q`, `a b`)", {"query": "q=a%20b"}, True),
        ("Query(`q`, `a b`)", {"query": "q=a+b"}, True),
        ("Query(`debug`)", {"query": "debug"}, True),
        ("Query(`debug`)", {"query": "debug=1"}, True),
        ("Query(`debug`)", {"query": "nodebug=1"}, False),
        # Query, v2 form `key=value`
        ("Query(`mobile=true`)", {"query": "mobile=true"}, True),
        ("Query(`mobile=true`)", {"query": "mobile=1"}, False),
        ("Query(`flag=`)", {"query": "flag"}, True),
        # QueryRegexp
        ("QueryRegexp(`id`, `^[0-9]+$`)", {"query": "id=x&id=42"}, True),
        ("QueryRegexp(`id`, `^[0-9]+$`)", {"query": "id=x"}, False),
        # ClientIP
        ("ClientIP(`127.0.0.1`)", {"client_ip": "127.0.0.1"}, True),
        ("ClientIP(`127.0.0.1`)", {"client_ip": "127.0.0.2"}, False),
        ("ClientIP(`10.0.0.0/8`, `192.168.1.0/24`)", {"client_ip": "192.168.1.7"}, True),
        ("ClientIP(`10.0.0.1/8`)", {"client_ip": "10.200.0.1"}, True),
        ("ClientIP(`10.0.0.0/8`)", {"client_ip": "::ffff:10.1.2.3"}, True),
        ("ClientIP(`10.0.0.0/8`)", {"client_ip": "::1"}, False),
        ("ClientIP(`::1`)", {"client_ip": "::1"}, True),
        ("ClientIP(`2001:db8::/32`)", {"client_ip": "2001:db8::5"}, True),
        ("ClientIP(`10.0.0.0/8`)", {"client_ip": "unix-socket"}, False),
        ("ClientIP(`10.0.0.0/8`)", {"client_ip": ""}, False),
    ],
)
def test_matcher(text: str, request_fields: dict, expected: bool) -> None:
    assert matches(text, **request_fields) is expected


# --- Syntax ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "request_fields", "expected"),
    [
        # && binds tighter than ||
        ("Path(`/a`) || Path(`/b`) && Method(`POST`)", {"path": "/a"}, True),
        ("Path(`/a`) || Path(`/b`) && Method(`POST`)", {"path": "/b"}, False),
        ("Path(`/a`) || Path(`/b`) && Method(`POST`)", {"path": "/b", "method": "POST"}, True),
        ("Path(`/b`) && Method(`POST`) || Path(`/a`)", {"path": "/a"}, True),
        # parentheses override it
        ("(Path(`/a`) || Path(`/b`)) && Method(`POST`)", {"path": "/a"}, False),
        ("(Path(`/a`) || Path(`/b`)) && Method(`POST`)", {"path": "/a", "method": "POST"}, True),
        ("((Path(`/a`)))", {"path": "/a"}, True),
        # negation binds tightest
        ("!Path(`/a`)", {"path": "/a"}, False),
        ("!Path(`/a`)", {"path": "/b"}, True),
        ("!!Path(`/a`)", {"path": "/a"}, True),
        ("!Path(`/a`) && Method(`GET`)", {"path": "/b"}, True),
        ("!(Path(`/a`) || Path(`/b`))", {"path": "/b"}, False),
        ("!(Path(`/a`) || Path(`/b`))", {"path": "/c"}, True),
        # whitespace, including newlines, between any tokens
        ("  Path ( `/a` ,\n `/b` )\n&&\tMethod(`GET`)  ", {"path": "/b"}, True),
        ("Path(`/a`)&&Method(`GET`)", {"path": "/a"}, True),
        # double-quoted strings, as Traefik v2 accepted
        ('Path("/a")', {"path": "/a"}, True),
        (r'Path("/say\"hi\"")', {"path": '/say"hi"'}, True),
        (r'Path("/back\\slash")', {"path": "/back\\slash"}, True),
        (r'PathRegexp("^/v\\d+$")', {"path": "/v2"}, True),
        ('Path(`/"raw\\`)', {"path": '/"raw\\'}, True),
    ],
)
def test_syntax(text: str, request_fields: dict, expected: bool) -> None:
    assert matches(text, **request_fields) is expected


def test_match_evaluates_host_too() -> None:
    rule = parse_rule("Host(`example.com`) && Path(`/a`)")
    assert rule.match is not None
    assert rule.match(Request(host="example.com", path="/a"))
    assert not rule.match(Request(host="other.com", path="/a"))


def test_and_short_circuits() -> None:
    rule = parse_rule("Path(`/nope`) && Header(`x`, `y`)")
    assert rule.match is not None
    assert rule.match(Untouchable(path="/")) is False


def test_or_short_circuits() -> None:
    rule = parse_rule("Path(`/`) || Header(`x`, `y`)")
    assert rule.match is not None
    assert rule.match(Untouchable(path="/")) is True


@pytest.mark.parametrize(
    ("text", "request_fields", "expected"),
    [
        ("Host(`a.com`)", {"host": "a.com"}, True),
        ("Host(`a.com`)", {"host": "b.com"}, False),
        ("Host(`a.com`) || Host(`B.com`)", {"host": "b.com"}, True),
        ("Host(`a.com`) && Path(`/x`)", {"host": "a.com", "path": "/x"}, True),
        ("Host(`a.com`) && Path(`/x`)", {"host": "b.com", "path": "/x"}, False),
        ("Host(`a.com`) || Path(`/x`)", {"host": "b.com", "path": "/x"}, True),
        ("!Host(`a.com`)", {"host": "b.com"}, True),
        ("!Host(`a.com`)", {"host": "a.com"}, False),
    ],
)
def test_routing_with_hosts_and_match(text: str, request_fields: dict, expected: bool) -> None:
    assert routes(parse_rule(text), Request(**request_fields)) is expected


# --- hosts and match ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("Host(`a.com`)", {"a.com"}),
        ("Host(`A.com`, `b.com`)", {"a.com", "b.com"}),
        ("Host(`a.com`) || Host(`b.com`)", {"a.com", "b.com"}),
        ("(Host(`a.com`))", {"a.com"}),
        ("Host(`a.com`) && Path(`/`)", {"a.com"}),
        ("Path(`/`) && Host(`a.com`)", {"a.com"}),
        ("Host(`a.com`, `b.com`) && Host(`b.com`, `c.com`)", {"b.com"}),
        ("Host(`a.com`) && Host(`b.com`)", set()),
        ("(Host(`a.com`) || Host(`b.com`)) && Method(`GET`)", {"a.com", "b.com"}),
        ("Host(`a.com`) && Path(`/x`) || Host(`b.com`) && Path(`/y`)", {"a.com", "b.com"}),
        ("Host(`a.com`) && Path(`/x`) || Path(`/y`)", None),
        ("Host(`a.com`) || Path(`/`)", None),
        ("!Host(`a.com`)", None),
        ("!Host(`a.com`) && Host(`b.com`)", {"b.com"}),
        ("Path(`/`)", None),
        ("HostRegexp(`a.com`)", None),
        ("Header(`Host`, `a.com`)", None),
    ],
)
def test_hosts(text: str, hosts: set[str] | None) -> None:
    expected = None if hosts is None else frozenset(hosts)
    assert parse_rule(text).hosts == expected


@pytest.mark.parametrize(
    "text",
    [
        "Host(`a.com`)",
        "Host(`a.com`, `b.com`)",
        "Host(`a.com`) || Host(`b.com`)",
        "(Host(`a.com`) || (Host(`b.com`))) || Host(`c.com`)",
    ],
)
def test_match_is_none_for_host_only_rules(text: str) -> None:
    assert parse_rule(text).match is None


@pytest.mark.parametrize(
    "text",
    [
        "Host(`a.com`) && Host(`a.com`)",
        "!Host(`a.com`)",
        "Host(`a.com`) && Path(`/`)",
        "Host(`a.com`) || Path(`/`)",
        "HostRegexp(`a.com`)",
        "Path(`/`)",
    ],
)
def test_match_is_compiled_otherwise(text: str) -> None:
    assert parse_rule(text).match is not None


def test_rule_keeps_source_and_is_frozen() -> None:
    text = "Host(`a.com`) && Path(`/`)"
    rule = parse_rule(text)
    assert rule.source == text
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.source = "x"  # type: ignore[misc]


def test_default_priority_is_rule_length() -> None:
    assert default_priority("Host(`a.com`)") == 13
    assert default_priority("Host(`a.com`) && Path(`/`)") > default_priority("Host(`a.com`)")


# --- Errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty rule"),
        (" \n\t", "empty rule"),
        ("Hots(`a.com`)", "unknown matcher 'Hots' at column 1"),
        ("Path(`/`) && Hots(`a`)", "unknown matcher 'Hots' at column 14"),
        ("host(`a.com`)", "unknown matcher 'host' at column 1 (did you mean 'Host'?)"),
        ("Host", "expected '(' at column 5"),
        ("Host `a.com`", "expected '(' at column 6"),
        ("Host()", "wrong number of arguments for Host at column 1: takes at least 1 argument"),
        ("Header(`X`)", "arguments for Header at column 1: takes 2 arguments, got 1"),
        ("PathRegexp(`a`, `b`)", "wrong number of arguments for PathRegexp at column 1: takes 1"),
        ("Query(`a`, `b`, `c`)", "Query at column 1: takes 1 or 2 arguments, got 3"),
        ("Host(localhost)", "expected a string argument at column 6"),
        ("Host(`a.com`,)", "expected a string argument at column 14"),
        ("Host(`a.com`", "expected ')' at column 13"),
        ("Host(`a.com` `b.com`)", "expected ')' at column 14"),
        ("(Host(`a.com`)", "expected ')' at column 15"),
        ("Host(`a.com)", "unterminated string at column 6"),
        ('Host("a.com)', "unterminated string at column 6"),
        ('Host("a.com\\', "unterminated string at column 6"),
        (r'Path("/\d")', r"invalid escape '\d' at column 8"),
        ("Host(`a.com`) Path(`/`)", "unexpected 'Path' at column 15"),
        ("Host(`a.com`))", "unexpected ')' at column 14"),
        ("Host(`a.com`) `x`", "unexpected string at column 15"),
        ("Host(`a.com`) &&", "expected a matcher, '!' or '(' at column 17"),
        ("Host(`a.com`) || || Path(`/`)", "expected a matcher, '!' or '(' at column 18"),
        ("()", "expected a matcher, '!' or '(' at column 2"),
        ("!", "expected a matcher, '!' or '(' at column 2"),
        ("Host(`a.com`) & Path(`/`)", "unexpected character '&' at column 15"),
        ("Host(`a.com`) | Path(`/`)", "unexpected character '|' at column 15"),
        ("Path(`/`) && Method(`GET`) ; x", "unexpected character ';' at column 28"),
        ("PathRegexp(`(`)", "invalid regex '(' for PathRegexp at column 12"),
        ("HostRegexp(`[`)", "invalid regex '[' for HostRegexp at column 12"),
        ("HeaderRegexp(`X`, `*`)", "invalid regex '*' for HeaderRegexp at column 19"),
        ("QueryRegexp(`id`, `+`)", "invalid regex '+' for QueryRegexp at column 19"),
        ("HostRegexp(`{sub:[}.a.com`)", "invalid regex '{sub:[}.a.com' for HostRegexp"),
        ("Path(`/u/{id:[0-9]+`)", "unbalanced braces in '/u/{id:[0-9]+' for Path at column 6"),
        ("PathPrefix(`/{id}}`)", "unbalanced braces in '/{id}}' for PathPrefix at column 12"),
        ("ClientIP(`10.0.0.300`)", "invalid IP or CIDR '10.0.0.300' for ClientIP at column 10"),
        ("ClientIP(`10.0.0.0/8`, `nope`)", "invalid IP or CIDR 'nope' for ClientIP at column 24"),
        ("ClientIP(`10.0.0.0/33`)", "invalid IP or CIDR '10.0.0.0/33'"),
        ("(" * 1000 + "Path(`/`)" + ")" * 1000, "rule is nested too deeply"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(RuleError) as excinfo:
        parse_rule(text)
    assert message in str(excinfo.value)


def test_rule_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_rule("Nope(`x`)")

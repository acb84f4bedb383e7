"""Traefik router rules: parse the rule text once, compile it to a predicate.

A rule is a boolean expression over matchers, in Traefik v3 syntax:

    expr  := and ('||' and)*
    and   := unary ('&&' unary)*
    unary := '!' unary | '(' expr ')' | Matcher '(' arg (',' arg)* ')'
    arg   := `backtick string` | "double-quoted string, with \\" and \\\\ escapes"

Traefik v2 forms are accepted too: several arguments to Host, HostRegexp, Path
and PathPrefix; `{name:regex}` placeholders in HostRegexp, Path and PathPrefix;
`Query(`key=value`)`; and the matcher names `Headers` and `HeadersRegexp`.

parse_rule() gives two views of a rule. `hosts` is the finite set of host names
that every matching request must have, so the proxy can route by a dict lookup.
`match` is a predicate over the whole rule, or None when that lookup alone decides.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Protocol
from urllib.parse import parse_qsl

__all__ = ["RequestView", "Rule", "RuleError", "default_priority", "parse_rule"]


class RuleError(ValueError):
    """An invalid rule; the message says what is wrong and at which column."""


class RequestView(Protocol):
    """The parts of a request that matchers look at."""

    host: str  # lower-case, port already stripped
    method: str  # upper-case, e.g. "GET"
    path: str  # path of the request target, without the query, not percent-decoded
    query: str  # raw query string without '?', "" if none
    client_ip: str  # e.g. "127.0.0.1" or "::1"

    def header_values(self, name: str) -> list[str]:
        """All values of the header `name` (given lower-case); [] if absent."""
        ...


Predicate = Callable[[RequestView], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    """A parsed router rule.

    `hosts`: the exact host names every matching request must have, or None if
    the rule does not pin the host to a finite set.
    `match`: the whole rule as a predicate, or None if the rule is only Host
    matchers joined by `||`, so that `request.host in hosts` decides alone.
    """

    source: str
    hosts: frozenset[str] | None
    match: Predicate | None


def parse_rule(text: str) -> Rule:
    """Parse and compile a router rule; raise RuleError if it is invalid."""
    if not text.strip():
        raise RuleError("empty rule")
    try:
        node = _Parser(_tokenize(text)).parse()
        return Rule(text, _hosts(node), None if _host_only(node) else _compile(node))
    except RecursionError:
        # Only absurdly nested parentheses or '!' get here; report them as a bad rule.
        raise RuleError("rule is nested too deeply") from None


def default_priority(rule_text: str) -> int:
    """Traefik's default router priority: the longer rule is taken to be more specific."""
    return len(rule_text)


# --- Syntax tree -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    """A matcher with its arguments, already compiled to a predicate."""

    name: str
    args: tuple[str, ...]
    predicate: Predicate


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node


@dataclass(frozen=True, slots=True)
class _And:
    operands: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Or:
    operands: tuple[_Node, ...]


_Node = _Call | _Not | _And | _Or


def _hosts(node: _Node) -> frozenset[str] | None:
    """The finite set of hosts every request matching `node` must have, or None."""
    match node:
        case _Call(name="Host", args=args):
            return _host_names(args)
        case _And(operands):
            return reduce(_hosts_of_and, map(_hosts, operands))
        case _Or(operands):
            return reduce(_hosts_of_or, map(_hosts, operands))
        case _:
            return None


def _hosts_of_and(
    left: frozenset[str] | None, right: frozenset[str] | None
) -> frozenset[str] | None:
    if left is None:
        return right
    if right is None:
        return left
    return left & right


def _hosts_of_or(
    left: frozenset[str] | None, right: frozenset[str] | None
) -> frozenset[str] | None:
    if left is None or right is None:
        return None
    return left | right


def _host_only(node: _Node) -> bool:
    """Whether `node` is only Host matchers joined by '||'."""
    match node:
        case _Call(name="Host"):
            return True
        case _Or(operands):
            return all(map(_host_only, operands))
        case _:
            return False


def _compile(node: _Node) -> Predicate:
    match node:
        case _Call(predicate=predicate):
            return predicate
        case _Not(operand):
            return _negate(_compile(operand))
        case _And(operands):
            return _all_of(tuple(map(_compile, operands)))
        case _Or(operands):
            return _any_of(tuple(map(_compile, operands)))


def _negate(predicate: Predicate) -> Predicate:
    def match(request: RequestView) -> bool:
        return not predicate(request)

    return match


# _all_of and _any_of loop explicitly: all()/any() over a generator would allocate
# a generator on every request, and a chain of two-operand closures would recurse
# as deep as the rule is long.


def _all_of(predicates: tuple[Predicate, ...]) -> Predicate:
    def match(request: RequestView) -> bool:
        for predicate in predicates:  # noqa: SIM110
            if not predicate(request):
                return False
        return True

    return match


def _any_of(predicates: tuple[Predicate, ...]) -> Predicate:
    if len(predicates) == 1:  # the usual matcher with one argument: skip the loop
        return predicates[0]

    def match(request: RequestView) -> bool:
        for predicate in predicates:  # noqa: SIM110
            if predicate(request):
                return True
        return False

    return match


# --- Tokens ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "name", "string", "end", or the operator itself: "&&", "||", "!", "(", ")", ","
    text: str  # the matcher name, the string's value, or the operator
    column: int  # 1-based column where the token starts


_NAME_OR_OPERATOR = re.compile(r"(?P<name>[A-Za-z][A-Za-z0-9]*)|(?P<operator>&&|\|\||[!(),])")


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        column = pos + 1
        if pos == len(text):
            tokens.append(_Token("end", "", column))
            return tokens
        if text[pos] in '`"':
            value, pos = _read_string(text, pos)
            tokens.append(_Token("string", value, column))
        elif found := _NAME_OR_OPERATOR.match(text, pos):
            kind = "name" if found.lastgroup == "name" else found.group()
            tokens.append(_Token(kind, found.group(), column))
            pos = found.end()
        else:
            raise RuleError(f"unexpected character {text[pos]!r} at column {column}")


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read the string literal opening at text[start]; return its value and the end position."""
    quote = text[start]
    chars = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == quote:
            return "".join(chars), pos + 1
        if char == "\\" and quote == '"':
            char = text[pos + 1 : pos + 2]
            if not char:
                break
            if char not in '"\\':
                raise RuleError(f"invalid escape '\\{char}' at column {pos + 1}")
            pos += 1
        chars.append(char)
        pos += 1
    raise RuleError(f"unterminated string at column {start + 1}")


# --- Parser ------------------------------------------------------------------


class _Parser:
    """Recursive descent over the tokens, one method per grammar production."""

    __slots__ = ("_tokens", "_pos")

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._pos = 0

    def parse(self) -> _Node:
        node = self._expr()
        token = self._tokens[self._pos]
        if token.kind != "end":
            shown = "string" if token.kind == "string" else repr(token.text)
            raise RuleError(
                f"unexpected {shown} at column {token.column}, expected '&&', '||' or end of rule"
            )
        return node

    def _expr(self) -> _Node:
        operands = [self._and()]
        while self._accept("||"):
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else _Or(tuple(operands))

    def _and(self) -> _Node:
        operands = [self._unary()]
        while self._accept("&&"):
            operands.append(self._unary())
        return operands[0] if len(operands) == 1 else _And(tuple(operands))

    def _unary(self) -> _Node:
        if self._accept("!"):
            return _Not(self._unary())
        if self._accept("("):
            node = self._expr()
            self._expect(")")
            return node
        token = self._tokens[self._pos]
        if token.kind != "name":
            raise RuleError(f"expected a matcher, '!' or '(' at column {token.column}")
        self._pos += 1
        return self._call(token)

    def _call(self, name: _Token) -> _Call:
        matcher = _MATCHERS.get(name.text)
        if matcher is None:
            raise RuleError(f"unknown matcher {name.text!r} at column {name.column}{_hint(name)}")
        self._expect("(")
        args = []
        if not self._accept(")"):
            args.append(self._expect("string"))
            while self._accept(","):
                args.append(self._expect("string"))
            self._expect(")")
        if not matcher.accepts(len(args)):
            raise RuleError(
                f"wrong number of arguments for {name.text} at column {name.column}: "
                f"takes {matcher.arity()}, got {len(args)}"
            )
        predicate = matcher.build(name.text, args)
        return _Call(name.text, tuple(arg.text for arg in args), predicate)

    def _accept(self, kind: str) -> bool:
        if self._tokens[self._pos].kind != kind:
            return False
        self._pos += 1
        return True

    def _expect(self, kind: str) -> _Token:
        token = self._tokens[self._pos]
        if token.kind != kind:
            wanted = "a string argument" if kind == "string" else repr(kind)
            raise RuleError(f"expected {wanted} at column {token.column}")
        self._pos += 1
        return token


def _hint(name: _Token) -> str:
    # Matcher names are case-sensitive, as in Traefik; `host` is a common slip.
    for known in _MATCHERS:
        if known.lower() == name.text.lower():
            return f" (did you mean {known!r}?)"
    return ""


# --- Matchers ----------------------------------------------------------------


def _host_names(args: Sequence[str]) -> frozenset[str]:
    return frozenset(arg.lower() for arg in args)


def _host(name: str, args: Sequence[_Token]) -> Predicate:
    hosts = _host_names([arg.text for arg in args])
    return lambda request: request.host in hosts


def _host_regexp(name: str, args: Sequence[_Token]) -> Predicate:
    return _any_of(tuple(_one_host_regexp(name, arg) for arg in args))


def _one_host_regexp(name: str, arg: _Token) -> Predicate:
    if _is_template(arg.text):
        template = _regex(name, arg, _translate(name, arg, "[^.]+"), re.IGNORECASE)
        return lambda request: template.fullmatch(request.host) is not None
    regex = _regex(name, arg, arg.text, re.IGNORECASE)
    return lambda request: regex.search(request.host) is not None


def _path(name: str, args: Sequence[_Token]) -> Predicate:
    return _any_of(tuple(_one_path(name, arg) for arg in args))


def _one_path(name: str, arg: _Token) -> Predicate:
    if _is_template(arg.text):
        template = _regex(name, arg, _translate(name, arg, "[^/]+"))
        return lambda request: template.fullmatch(request.path) is not None
    path = arg.text
    return lambda request: request.path == path


def _path_prefix(name: str, args: Sequence[_Token]) -> Predicate:
    return _any_of(tuple(_one_path_prefix(name, arg) for arg in args))


def _one_path_prefix(name: str, arg: _Token) -> Predicate:
    if _is_template(arg.text):
        template = _regex(name, arg, _translate(name, arg, "[^/]+"))
        return lambda request: template.match(request.path) is not None
    prefix = arg.text
    return lambda request: request.path.startswith(prefix)


def _path_regexp(name: str, args: Sequence[_Token]) -> Predicate:
    regex = _regex(name, args[0], args[0].text)
    return lambda request: regex.search(request.path) is not None


def _method(name: str, args: Sequence[_Token]) -> Predicate:
    methods = frozenset(arg.text.upper() for arg in args)
    return lambda request: request.method in methods


def _header(name: str, args: Sequence[_Token]) -> Predicate:
    header, value = args[0].text.lower(), args[1].text
    return lambda request: value in request.header_values(header)


def _header_regexp(name: str, args: Sequence[_Token]) -> Predicate:
    header, regex = args[0].text.lower(), _regex(name, args[1], args[1].text)
    return lambda request: any(map(regex.search, request.header_values(header)))


def _query(name: str, args: Sequence[_Token]) -> Predicate:
    key = args[0].text
    if len(args) == 2:
        value = args[1].text
    elif "=" in key:  # v2: a single `key=value` argument
        key, _, value = key.partition("=")
    else:  # v3: the key alone, with any value
        return _query_param(key, lambda candidate: True)
    return _query_param(key, lambda candidate: candidate == value)


def _query_regexp(name: str, args: Sequence[_Token]) -> Predicate:
    return _query_param(args[0].text, _regex(name, args[1], args[1].text).search)


def _query_param(key: str, accept: Callable[[str], object]) -> Predicate:
    def match(request: RequestView) -> bool:
        # Parsed here rather than by the caller: most rules never look at the query.
        pairs = parse_qsl(request.query, keep_blank_values=True)
        return any(k == key and accept(v) for k, v in pairs)

    return match


def _client_ip(name: str, args: Sequence[_Token]) -> Predicate:
    networks = tuple(_network(name, arg) for arg in args)

    def match(request: RequestView) -> bool:
        try:
            address = ipaddress.ip_address(request.client_ip)
        except ValueError:
            return False
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; they belong to IPv4 networks.
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in networks)

    return match


def _network(name: str, arg: _Token) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(arg.text, strict=False)
    except ValueError:
        raise RuleError(
            f"invalid IP or CIDR {arg.text!r} for {name} at column {arg.column}"
        ) from None


def _regex(name: str, arg: _Token, pattern: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as err:
        where = f"for {name} at column {arg.column}"
        raise RuleError(f"invalid regex {arg.text!r} {where}: {err}") from None


# A v2 placeholder is `{name}` or `{name:regex}`. Regex quantifiers such as `{2,3}`
# never start with a letter, so a v3 regular expression is not taken for a template.
_PLACEHOLDER = re.compile(r"\{[A-Za-z_]\w*[:}]")


def _is_template(value: str) -> bool:
    return _PLACEHOLDER.search(value) is not None


def _translate(name: str, arg: _Token, default: str) -> str:
    """Turn a v2 template into a regex: literal text escaped, `{name:regex}` -> `(?:regex)`,
    `{name}` -> `(?:default)`. Braces nest, as in `{id:[0-9]{4}}`."""
    parts = []
    depth = start = 0
    for pos, char in enumerate(arg.text):
        if char == "{":
            if depth == 0:
                parts.append(re.escape(arg.text[start:pos]))
                start = pos + 1
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                break
            if depth == 0:
                _, colon, pattern = arg.text[start:pos].partition(":")
                parts.append(f"(?:{pattern if colon else default})")
                start = pos + 1
    if depth != 0:
        raise RuleError(f"unbalanced braces in {arg.text!r} for {name} at column {arg.column}")
    parts.append(re.escape(arg.text[start:]))
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Matcher:
    build: Callable[[str, Sequence[_Token]], Predicate]
    min_args: int
    max_args: int | None  # None: no upper bound

    def accepts(self, count: int) -> bool:
        return self.min_args <= count and (self.max_args is None or count <= self.max_args)

    def arity(self) -> str:
        if self.max_args is None:
            return f"at least {self.min_args} argument{'s' if self.min_args > 1 else ''}"
        if self.max_args == self.min_args:
            return f"{self.min_args} argument{'s' if self.min_args > 1 else ''}"
        return f"{self.min_args} or {self.max_args} arguments"


_MATCHERS: dict[str, _Matcher] = {
    # v3 takes one argument where v2 took several; several are accepted and OR-ed.
    "Host": _Matcher(_host, 1, None),
    "HostRegexp": _Matcher(_host_regexp, 1, None),
    "Path": _Matcher(_path, 1, None),
    "PathPrefix": _Matcher(_path_prefix, 1, None),
    "PathRegexp": _Matcher(_path_regexp, 1, 1),
    "Method": _Matcher(_method, 1, None),
    "Header": _Matcher(_header, 2, 2),
    "Headers": _Matcher(_header, 2, 2),
    "HeaderRegexp": _Matcher(_header_regexp, 2, 2),
    "HeadersRegexp": _Matcher(_header_regexp, 2, 2),
    "Query": _Matcher(_query, 1, 2),
    "QueryRegexp": _Matcher(_query_regexp, 2, 2),
    "ClientIP": _Matcher(_client_ip, 1, None),
}

"""`portside check --config FILE`, run as a real subprocess on files written to tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from portside.master.check import run_check

DYNAMIC = """
[http.routers.whoami]
rule = "Host(`a.localhost`)"
service = "whoami"
entryPoints = ["web"]

[http.services.whoami.loadBalancer]
servers = [{ url = "http://127.0.0.1:9001" }]
"""


def static_text(provider: str = "") -> str:
    return f'[entryPoints.web]\naddress = "127.0.0.1:8000"\n{provider}'


def check(path: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portside.master.cli", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_good_static_without_provider(tmp_path) -> None:
    static = tmp_path / "static.toml"
    static.write_text(static_text())
    result = check(static)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{static}: OK"]
    assert result.stderr == ""


def test_good_static_with_file(tmp_path) -> None:
    static = tmp_path / "static.toml"
    dynamic = tmp_path / "dynamic.toml"
    static.write_text(static_text(f'[providers.file]\nfilename = "{dynamic}"\n'))
    dynamic.write_text(DYNAMIC)
    result = check(static)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{static}: OK", f"{dynamic}: OK"]


def test_good_static_with_relative_directory(tmp_path) -> None:
    (tmp_path / "dyn").mkdir()
    (tmp_path / "dyn" / "a.toml").write_text(DYNAMIC)
    (tmp_path / "static.toml").write_text(static_text('[providers.file]\ndirectory = "dyn"\n'))
    result = check(Path("static.toml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["static.toml: OK", f"{tmp_path / 'dyn'}: OK"]


def test_unsupported_section_is_a_warning_not_an_error(tmp_path) -> None:
    static = tmp_path / "static.toml"
    dynamic = tmp_path / "dynamic.toml"
    static.write_text(static_text(f'[providers.file]\nfilename = "{dynamic}"\n'))
    dynamic.write_text(DYNAMIC + "[http.middlewares.m.stripPrefix]\nprefixes = ['/a']\n")
    result = check(static)
    assert result.returncode == 0, result.stderr
    warning = f"warning: {dynamic}: http.middlewares.m.stripPrefix: not supported yet, ignored"
    assert warning in result.stderr


def test_retry_and_health_check_keys_are_valid(tmp_path) -> None:
    static = tmp_path / "static.toml"
    dynamic = tmp_path / "dynamic.toml"
    static.write_text(static_text(f'[providers.file]\nfilename = "{dynamic}"\n'))
    dynamic.write_text(
        DYNAMIC.replace('entryPoints = ["web"]', 'middlewares = ["retry"]')
        + "[http.services.whoami.loadBalancer.healthCheck]\npath = '/health'\n"
        + "[http.services.whoami.loadBalancer.passiveHealthCheck]\nmaxFailedAttempts = 2\n"
        + "[http.middlewares.retry.retry]\nattempts = 3\ninitialInterval = '100ms'\n"
    )
    result = check(static)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{static}: OK", f"{dynamic}: OK"]
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[entryPoints.web]\nadress = ":80"\n',
            [
                "entryPoints.web.adress: unknown key (did you mean 'address'?)",
                "entryPoints.web.address: required key is missing",
            ],
        ),
        (
            '[entryPoints.web]\naddress = "localhost"\n',
            ["entryPoints.web.address: expected HOST:PORT, got 'localhost'"],
        ),
        ("", ["entryPoints: at least one entry point is required"]),
        ("[entryPoints.web\n", ["invalid TOML: "]),
    ],
)
def test_broken_static(tmp_path, text: str, expected: list[str]) -> None:
    static = tmp_path / "static.toml"
    static.write_text(text)
    result = check(static)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), lines
    for line, fragment in zip(lines, expected, strict=True):
        assert line.startswith(f"error: {static}: {fragment}"), line


def test_missing_static_file(tmp_path) -> None:
    missing = tmp_path / "nope.toml"
    result = check(missing)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {missing}: cannot read file: No such file or directory"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            DYNAMIC.replace('service = "whoami"', 'service = "whoamy"'),
            "http.routers.whoami.service: unknown service 'whoamy' (did you mean 'whoami'?)",
        ),
        (
            DYNAMIC.replace("Host(`a.localhost`)", "Hots(`x`)"),
            "http.routers.whoami.rule: invalid rule 'Hots(`x`)': ",
        ),
        (
            DYNAMIC.replace('["web"]', '["websecure"]'),
            "http.routers.whoami.entryPoints: unknown entry point 'websecure' (defined: web)",
        ),
        (
            DYNAMIC.replace("http://127.0.0.1:9001", "https://127.0.0.1:9001"),
            "http.services.whoami.loadBalancer.servers[0].url: https upstreams are not supported",
        ),
        (
            DYNAMIC.replace('entryPoints = ["web"]', 'middlewares = ["retyr"]')
            + "[http.middlewares.retry.retry]\nattempts = 3\n",
            "http.routers.whoami.middlewares: unknown middleware 'retyr' (did you mean 'retry'?)",
        ),
        (
            DYNAMIC + "[http.middlewares.retry.retry]\nattempts = -1\n",
            "http.middlewares.retry.retry.attempts: must be >= 0, got -1",
        ),
        (
            DYNAMIC + "[http.services.whoami.loadBalancer.healthCheck]\npath = 'health'\n",
            "http.services.whoami.loadBalancer.healthCheck.path: expected a path starting with '/'",
        ),
        (
            DYNAMIC + "[http.services.whoami.loadBalancer.passiveHealthCheck]\n"
            "failureWindow = '10 s'\n",
            "http.services.whoami.loadBalancer.passiveHealthCheck.failureWindow: expected a",
        ),
        (
            DYNAMIC + "[http.services.whoami.loadBalancer.retry]\ndisabled = 1\n",
            "http.services.whoami.loadBalancer.retry.disabled: expected a boolean",
        ),
    ],
)
def test_broken_dynamic(tmp_path, text: str, expected: str) -> None:
    static = tmp_path / "static.toml"
    dynamic = tmp_path / "dynamic.toml"
    static.write_text(static_text(f'[providers.file]\nfilename = "{dynamic}"\n'))
    dynamic.write_text(text)
    result = check(static)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{static}: OK"]
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {dynamic}: {expected}"), line


def test_missing_dynamic_file(tmp_path) -> None:
    static = tmp_path / "static.toml"
    static.write_text(static_text('[providers.file]\nfilename = "/nonexistent/dyn.toml"\n'))
    result = check(static)
    assert result.returncode == 1
    assert "error: /nonexistent/dyn.toml: cannot read file" in result.stderr


def test_run_check_in_process(tmp_path, capsys) -> None:
    static = tmp_path / "static.toml"
    static.write_text('[entryPoints.web]\naddress = ":0"\n[log]\nlevel = 3\n')
    assert run_check(str(static)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"error: {static}: entryPoints.web.address: port must be between 1 and 65535, got 0",
        f"error: {static}: log.level: expected a string, got integer 3",
    ]


@pytest.mark.parametrize("argv", [["--config", "{}"], ["--config={}"]])
def test_run_command_reads_its_config_without_argparse(tmp_path, argv) -> None:
    # The master forks the workers, and what it imports is in each of them:
    # `portside --config FILE` must reach the arbiter without importing argparse.
    missing = tmp_path / "missing.toml"
    code = (
        "import sys\n"
        "from portside.master.cli import main\n"
        f"status = main({[a.format(missing) for a in argv]!r})\n"
        "print('argparse' in sys.modules)\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"{missing}: cannot read file" in result.stderr
    assert result.stdout.strip() == "False"

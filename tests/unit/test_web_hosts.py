"""The host names the browser edge answers to (web_hosts.py), and how they are configured."""

from __future__ import annotations

import argparse

import pytest

from remotemedia.cli.serve import add_serve_arguments, config_from_args
from remotemedia.config import ConfigError, ServerConfig
from remotemedia.transport.web_hosts import HostNames

DEFAULT = HostNames.of((), own="media-box")


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8080",
        "LOCALHOST.:8080",
        "app.localhost:8080",
        "127.0.0.1:8080",
        "192.168.1.20",
        "[::1]:8080",
        "[::1]",
        "[fe80::1%25eth0]:8080",
        "::1",
        "media-box:8080",
        "Media-Box",
        None,
        "",
    ],
)
def test_host_names_allow_ip_literals_localhost_and_the_machine_by_default(
    host: str | None,
) -> None:
    assert DEFAULT.allows(host)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:8080",
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "media-box.evil.example",
        "x",
        "localhost:80:80",
        "localhost:http",
        "localhost:\u00b2",
        "[::1",
        "[::1]x",
        "[evil.example]:8080",
        "[localhost]",
    ],
)
def test_host_names_refuse_any_other_name_and_malformed_hosts(host: str) -> None:
    assert not DEFAULT.allows(host)


def test_host_names_take_exact_names_dotted_suffixes_and_a_star() -> None:
    hosts = HostNames.of(["Media.Example.com.", ".corp.example"])
    assert hosts.allows("media.example.com:443")
    assert not hosts.allows("www.media.example.com")
    assert hosts.allows("corp.example")
    assert hosts.allows("a.b.corp.example:8080")
    assert not hosts.allows("evilcorp.example")
    assert HostNames.of(["*"]).allows("anything.example")


def _config(argv: list[str], env: dict[str, str]) -> ServerConfig:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return config_from_args(parser.parse_args(argv), env)


def test_web_allowed_hosts_come_from_the_flag_or_its_variable() -> None:
    assert _config([], {}).web_allowed_hosts == ()
    argv = ["--web-allowed-hosts", "media.example.com", "--web-allowed-hosts", ".corp.example"]
    assert _config(argv, {}).web_allowed_hosts == ("media.example.com", ".corp.example")
    env = {"REMOTEMEDIA_WEB_ALLOWED_HOSTS": "media.example.com, .corp.example"}
    assert _config([], env).web_allowed_hosts == ("media.example.com", ".corp.example")
    assert _config(["--web-allowed-hosts", "*"], env).web_allowed_hosts == ("*",)


@pytest.mark.parametrize("entry", ["https://media.example.com", "media.example.com:8080", "", "*."])
def test_a_web_allowed_host_that_is_no_name_is_refused_naming_the_flag(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"--web-allowed-hosts .* is not a host name"):
        ServerConfig(web_allowed_hosts=(entry,))

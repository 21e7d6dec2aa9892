"""Recipes resolve per CLI, env and config, and a harvest's record is built from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cache import Cookie
from harvester import UnknownProviderError, known_providers, resolve_recipe
from harvester._identity import build_identity
from harvester._recipes import env_base_url, normalize_origin, parse_session
from harvester._record import make_record

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_seed_providers_have_real_default_origins() -> None:
    """Without overrides each provider points at its real site."""
    assert known_providers() == ["cerebras", "cloudflare", "deepinfra", "freenetfly"]
    assert resolve_recipe("cloudflare", environ={}).start_url == "https://playground.ai.cloudflare.com/"
    assert resolve_recipe("cerebras", environ={}).session_url == "https://inference.cerebras.ai/api/auth/session"


def test_base_url_precedence_cli_then_env_then_config() -> None:
    """--base-url beats $HARVEST_<P>_BASE_URL, which beats the config; paths are kept."""
    env = {"HARVEST_CEREBRAS_BASE_URL": "http://127.0.0.1:2"}
    assert resolve_recipe("cerebras", base_url="http://127.0.0.1:1/x", environ=env).origin == "http://127.0.0.1:1"
    recipe = resolve_recipe("cerebras", config_base_url="http://127.0.0.1:3", environ=env)
    assert recipe.session_url == "http://127.0.0.1:2/api/auth/session"
    assert resolve_recipe("cerebras", config_base_url="http://127.0.0.1:3", environ={}).origin.endswith(":3")
    assert env_base_url("free-netfly", {"HARVEST_FREE_NETFLY_BASE_URL": "x"}) == "x"


def test_unknown_provider_lists_known_ones() -> None:
    """An unknown name raises UnknownProviderError naming every known provider."""
    with pytest.raises(UnknownProviderError) as info:
        resolve_recipe("nope")
    assert "cerebras" in str(info.value) and info.value.provider == "nope"


def test_generic_url_recipe_is_named_after_the_host() -> None:
    """`--url` makes a generic recipe named after the host unless --name is given."""
    recipe = resolve_recipe(None, url="http://example.test:8080/app?x=1", environ={})
    assert (recipe.name, recipe.origin, recipe.start_path) == ("example.test", "http://example.test:8080", "/app?x=1")
    assert resolve_recipe(None, url="http://example.test/", name="ex", environ={}).name == "ex"


def test_bad_origin_is_rejected() -> None:
    """Only http(s) origins are accepted."""
    with pytest.raises(ValueError, match=r"http\(s\)"):
        normalize_origin("ftp://x")


def test_parse_session() -> None:
    """The demo key comes from user.demoApiKey; an empty session has none."""
    assert parse_session({"user": {"demoApiKey": "csk-1"}}) == "csk-1"
    assert parse_session({}) is None and parse_session(None) is None and parse_session({"user": {}}) is None


def test_record_expiry_is_the_sooner_of_cookie_and_ttl() -> None:
    """expires_at is min(cf_clearance expiry, harvested_at + TTL)."""
    identity = build_identity(UA, "Chrome/156.0.8078.79")
    recipe = resolve_recipe("cloudflare", base_url="http://127.0.0.1:9", environ={})
    soon = NOW + timedelta(minutes=5)
    cookies = [Cookie("cf_clearance", "v", "127.0.0.1", expires=soon.timestamp(), http_only=True)]
    record = make_record(recipe, identity, cookies, api_key=None, proxy=None, backend="nodriver", now=NOW)
    assert record.expires_at == soon
    late = [Cookie("cf_clearance", "v", expires=(NOW + timedelta(days=1)).timestamp())]
    record = make_record(recipe, identity, late, api_key=None, proxy=None, backend="nodriver", now=NOW)
    assert record.expires_at == NOW + timedelta(minutes=30)
    assert record.browser == "Chromium/156" and record.impersonate == "chrome150"
    assert record.origin == "http://127.0.0.1:9" and "Headless" not in record.user_agent


def test_deepinfra_record_carries_site_headers() -> None:
    """DeepInfra's record has the headers its web embed sends, on the rebased origin."""
    identity = build_identity(UA, "Chrome/156.0.8078.79")
    recipe = resolve_recipe("deepinfra", base_url="http://127.0.0.1:9", environ={})
    record = make_record(recipe, identity, [], api_key=None, proxy="http://p:1", backend="playwright", now=NOW)
    assert record.headers["x-deepinfra-source"] == "web-embed"
    assert record.headers["origin"] == "http://127.0.0.1:9"
    assert record.headers["referer"] == "http://127.0.0.1:9/"
    assert record.headers["sec-ch-ua-platform"] == '"Linux"'
    assert record.proxy == "http://p:1"

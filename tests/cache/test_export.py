"""The exporters (pure): curl config quoting, control characters refused, the browser formats' fields."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import orjson
import pytest

from cache import Cookie, SessionRecord
from cache._export import FORMATS, ExportError, render
from cache._export_files import export_records, prepare_directory


def _record(**changes: object) -> SessionRecord:
    record = SessionRecord(
        provider="site",
        cookies=[
            Cookie("cf_clearance", 'v"a\\l', "127.0.0.1", http_only=True, same_site="Lax", expires=2_000_000_000),
            Cookie("pref", "x y", ".example.test"),
        ],
        user_agent='Mozilla/5.0 (X11; Linux x86_64) "quoted" \\ back',
        headers={"sec-ch-ua": '"Chromium";v="130"'},
        api_key="key-123",
        origin="http://127.0.0.1:9",
    )
    return record.replace(**changes) if changes else record


def _inject(record: SessionRecord, field: str, value: str) -> SessionRecord:
    """A record holding ``value`` in one field, built past any validation (as a tampered source could)."""
    if field.startswith("cookie."):
        cookie = record.cookies[0]
        object.__setattr__(cookie, field.split(".", 1)[1], value)
    elif field == "header-name":
        object.__setattr__(record, "headers", {value: "x"})
    elif field == "header-value":
        object.__setattr__(record, "headers", {"x-a": value})
    else:
        object.__setattr__(record, field, value)
    return record


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "json"])
@pytest.mark.parametrize(
    "field",
    ["cookie.value", "cookie.name", "cookie.domain", "cookie.path", "header-name", "header-value", "user_agent"],
)
@pytest.mark.parametrize("bad", ["a\r\nSet-Cookie: x=y", "a\nb", "a\0b", "a\tb", "a\x1bb", "a\x7fb"])
def test_control_characters_are_refused_by_every_line_format(fmt: str, field: str, bad: str) -> None:
    """No export writes a control character (CR, LF, NUL, TAB, ESC, DEL): an injected line is impossible."""
    record = _inject(_record(), field, bad)
    with pytest.raises(ValueError, match=r"control character|not allowed"):  # ExportError or RecordError
        render(record, fmt)


def test_curl_config_is_what_curl_reads(tmp_path: Path) -> None:
    """curl parses the -K file back to exactly the user agent, headers and cookie (quotes, backslashes, spaces)."""
    record = _record()
    config = tmp_path / "site.curlrc"
    config.write_text(render(record, "curl"))
    # curl --libcurl writes the C code for the options it parsed: the values as curl itself understood them.
    out = subprocess.run(
        ["curl", "-K", str(config), "--libcurl", "-", "--max-time", "1", "-s", "http://127.0.0.1:9/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    code = out.stdout
    assert 'CURLOPT_USERAGENT, "Mozilla/5.0 (X11; Linux x86_64) \\"quoted\\" \\\\ back"' in code, code
    assert 'CURLOPT_COOKIE, "cf_clearance=v\\"a\\\\l; pref=x y"' in code, code
    assert '"sec-ch-ua: \\"Chromium\\";v=\\"130\\""' in code and '"Authorization: Bearer key-123"' in code


def test_env_lines_round_trip_through_the_shell() -> None:
    """The env format's values come back unchanged through shlex (what `eval` does)."""
    lines = dict(shlex.split(line)[1].split("=", 1) for line in render(_record(), "env").splitlines())
    assert lines["HARVEST_SITE_USER_AGENT"] == _record().user_agent
    assert lines["HARVEST_SITE_COOKIE"] == 'cf_clearance=v"a\\l; pref=x y'


def test_storage_state_and_cookies_json_fields() -> None:
    """storage-state uses -1 for a session cookie and Playwright's SameSite names; cookies.json the extensions'."""
    state = orjson.loads(render(_record(), "storage-state"))
    assert state["origins"] == []
    clearance, pref = state["cookies"]
    assert clearance["expires"] == 2_000_000_000 and clearance["httpOnly"] is True and clearance["sameSite"] == "Lax"
    assert pref["expires"] == -1 and pref["sameSite"] == "Lax" and pref["domain"] == ".example.test"
    listed = orjson.loads(render(_record(), "cookies.json"))
    assert listed[0]["hostOnly"] is True and listed[0]["session"] is False and listed[0]["sameSite"] == "lax"
    assert listed[1]["hostOnly"] is False and listed[1]["session"] is True and "expirationDate" not in listed[1]
    assert listed[1]["sameSite"] == "unspecified" and listed[0]["storeId"] == "0"


def test_a_har_needs_an_origin() -> None:
    """A record with no origin takes it from a cookie's domain; with neither, the HAR export says why."""
    har = orjson.loads(render(_record(origin=None), "har"))
    assert har["log"]["entries"][0]["request"]["url"] == "http://127.0.0.1/"
    with pytest.raises(ExportError, match="no origin"):
        render(_record(origin=None, cookies=[Cookie("a", "b")]), "har")


def test_export_directory_rules(tmp_path: Path) -> None:
    """A new DIR is 0700, a shared one is refused, and a record that cannot be exported writes nothing."""
    assert prepare_directory(tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o775)
    shared.chmod(0o775)
    with pytest.raises(ExportError, match="writable by other users"):
        export_records([_record()], shared, "har")
    target = tmp_path / "out"
    bad = _inject(_record(provider="bad"), "cookie.value", "a\nb")
    with pytest.raises(ValueError, match=r"line feed|control character"):  # RecordError, or ExportError
        export_records([_record(), bad], target, "cookies.txt")
    assert list(target.iterdir()) == []

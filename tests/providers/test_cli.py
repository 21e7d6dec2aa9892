"""`harvest chat`, `harvest models` and `harvest image` against the emulator."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from harvester.cli import main
from harvester.cli._exit import PROVIDER_ERROR, USAGE
from tests.emulator._server import EmulatorThread


@pytest.fixture
def emu(emulator: EmulatorThread) -> EmulatorThread:
    """The emulator with the gate open."""
    emulator.configure(require_clearance=False)
    return emulator


def test_chat_streams_to_stdout(emu: EmulatorThread) -> None:
    """`harvest chat` prints the streamed answer."""
    result = CliRunner().invoke(main, ["chat", "--provider", "freenetfly", "--base-url", emu.url, "hello"])
    assert result.exit_code == 0, result.output
    assert result.output == "Hello from the freenetfly emulator. You said: hello\n"


def test_chat_reads_prompt_from_stdin_and_sends_system(emu: EmulatorThread) -> None:
    """Without PROMPT the prompt comes from stdin; --system adds a system message."""
    args = ["chat", "--provider", "cloudflare", "-m", "llama-3.1-8b", "--system", "be brief", "--base-url", emu.url]
    result = CliRunner().invoke(main, args, input="from stdin")
    assert result.exit_code == 0, result.output
    assert result.output.endswith("You said: from stdin\n")


def test_chat_error_exits_with_provider_error(emu: EmulatorThread) -> None:
    """A provider failure exits with PROVIDER_ERROR and a one-line message."""
    emu.configure(fail_next=10, fail_status=500)
    result = CliRunner().invoke(main, ["chat", "--provider", "freenetfly", "--base-url", emu.url, "hi"])
    assert result.exit_code == PROVIDER_ERROR
    assert "HTTP 500" in result.output


def test_models_json(emu: EmulatorThread) -> None:
    """`harvest models --json` lists text and image models split by type."""
    result = CliRunner().invoke(main, ["models", "--provider", "deepinfra", "--json", "--base-url", emu.url])
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.output)
    assert "stabilityai/sd3.5" in data["image_models"]
    assert "stabilityai/sd3.5" not in data["models"]


def test_image_saves_data_uris(emu: EmulatorThread, tmp_path: Path) -> None:
    """`harvest image` saves inline images to files and prints their paths; URLs are printed as they are."""
    result = CliRunner().invoke(main, ["image", "--base-url", emu.url, "-o", str(tmp_path), "a cat"])
    assert result.exit_code == 0, result.output
    saved = Path(result.output.strip())
    assert saved.read_bytes().startswith(b"\x89PNG")
    result = CliRunner().invoke(main, ["image", "-m", "flux-schnell", "--base-url", emu.url, "a dog"])
    assert result.output.startswith(emu.url + "/static/img/")


def test_unknown_model_is_a_clear_error(emu: EmulatorThread) -> None:
    """An unknown model exits with PROVIDER_ERROR and suggests close names."""
    result = CliRunner().invoke(main, ["chat", "--provider", "cerebras", "-m", "llama3.1-8", "hi"])
    assert result.exit_code == PROVIDER_ERROR
    assert "llama3.1-8b" in result.output


@pytest.mark.parametrize(("setting", "route"), [("inference", "/api/inference"), (None, "/agents/playground")])
def test_chat_takes_the_cloudflare_protocol_from_the_config(
    emu: EmulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, route: str
) -> None:
    """`[providers.cloudflare] protocol` picks the wire protocol of `harvest chat`; without it the agent socket."""
    config = tmp_path / "config.toml"
    config.write_text(f'[providers.cloudflare]\nprotocol = "{setting}"\n' if setting else "")
    monkeypatch.setenv("HARVEST_CONFIG", str(config))
    monkeypatch.delenv("HARVEST_CLOUDFLARE_PROTOCOL", raising=False)
    result = CliRunner().invoke(main, ["chat", "--provider", "cloudflare", "--base-url", emu.url, "hello"])
    assert result.exit_code == 0, result.output
    assert result.output == "Hello from the cloudflare emulator. You said: hello\n"
    assert emu.stats["api_requests"] == {route: 1}


def test_bad_protocol_is_a_usage_error(emu: EmulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown protocol, in the config file or the environment, exits with USAGE and one line."""
    config = tmp_path / "config.toml"
    config.write_text('[providers.cloudflare]\nprotocol = "grpc"\n')
    monkeypatch.setenv("HARVEST_CONFIG", str(config))
    result = CliRunner().invoke(main, ["chat", "--provider", "cloudflare", "--base-url", emu.url, "hello"])
    assert result.exit_code == USAGE
    assert "protocol" in result.output and "agent, inference" in result.output
    config.write_text("")
    monkeypatch.setenv("HARVEST_CLOUDFLARE_PROTOCOL", "grpc")
    result = CliRunner().invoke(main, ["chat", "--provider", "cloudflare", "--base-url", emu.url, "hello"])
    assert result.exit_code == USAGE
    assert "agent, inference" in result.output
    assert emu.stats["api_requests_total"] == 0

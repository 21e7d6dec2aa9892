"""What each fake provider offers: model lists in their real shapes, and a real (tiny) PNG for image models."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

CLOUDFLARE_MODELS: list[dict[str, Any]] = [
    {
        "name": name,
        "description": description,
        "task": {"name": "Text Generation", "description": "Family of generative text models."},
        "properties": [{"property_id": "beta", "value": "false"}],
    }
    for name, description in [
        ("@cf/meta/llama-3.3-70b-instruct-fp8-fast", "Llama 3.3 70B quantized to fp8, optimized to be faster."),
        ("@cf/meta/llama-3.1-8b-instruct-awq", "Quantized (int4) Llama 3.1 8B Instruct."),
        ("@cf/meta/llama-3.1-8b-instruct-fp8", "Llama 3.1 8B Instruct quantized to fp8."),
        ("@cf/openai/gpt-oss-120b", "OpenAI's open-weight 120B model."),
        ("@cf/meta/llama-3.2-1b-instruct", "Llama 3.2 1B, small multilingual model."),
        ("@cf/qwen/qwen2.5-coder-32b-instruct", "Qwen2.5 Coder 32B, code-specific model."),
        ("@cf/deepseek-ai/deepseek-r1-distill-qwen-32b", "DeepSeek R1 distilled into Qwen 32B; it reasons."),
        ("@cf/mistral/mistral-7b-instruct-v0.2", "Mistral 7B Instruct v0.2."),
    ]
]

CEREBRAS_MODELS = [
    "llama3.1-70b",
    "llama3.1-8b",
    "llama-3.3-70b",
    "llama-4-scout-17b-16e-instruct",
    "deepseek-r1-distill-llama-70b",
]

FREENETFLY_MODELS = ["gpt-3.5-turbo", "gpt-4", "gpt-4o-mini", "deepseek-r1"]


def _featured(name: str, type_: str, reported: str, description: str) -> dict[str, Any]:
    """One entry of DeepInfra's `/models/featured`."""
    return {
        "model_name": name,
        "type": type_,
        "reported_type": reported,
        "description": description,
        "cover_img_url": "",
        "tags": [],
        "pricing": {"type": "time" if reported == "text-to-image" else "tokens"},
        "max_tokens": 32768 if reported == "text-generation" else None,
    }


DEEPINFRA_FEATURED: list[dict[str, Any]] = [
    _featured("meta-llama/Meta-Llama-3.1-70B-Instruct", "text-generation", "text-generation", "Llama 3.1 70B."),
    _featured("meta-llama/Meta-Llama-3.1-8B-Instruct", "text-generation", "text-generation", "Llama 3.1 8B."),
    _featured("Qwen/Qwen2.5-72B-Instruct", "text-generation", "text-generation", "Qwen 2.5 72B."),
    _featured("deepseek-ai/DeepSeek-R1", "text-generation", "text-generation", "DeepSeek R1, reasons first."),
    _featured("stabilityai/sd3.5", "text-to-image", "text-to-image", "Stable Diffusion 3.5."),
    # Real DeepInfra lists some image models with another `type`; only `reported_type` says text-to-image.
    _featured("black-forest-labs/FLUX-1-schnell", "custom", "text-to-image", "FLUX.1 schnell."),
]

DEEPINFRA_TEXT = {m["model_name"] for m in DEEPINFRA_FEATURED if m["reported_type"] == "text-generation"}
DEEPINFRA_IMAGES = {m["model_name"] for m in DEEPINFRA_FEATURED if m["reported_type"] == "text-to-image"}
# sd3.5 answers inline data URLs; the other image models answer URLs to fetch.
INLINE_IMAGE_MODELS = {"stabilityai/sd3.5"}


def _png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (242, 128, 32)) -> bytes:
    """A valid solid-colour PNG, built by hand so no imaging library is needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


PNG = _png()
PNG_DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()

"""DeepInfra: an OpenAI chat endpoint plus native image inference, as the web embed calls them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ._base import Provider
from ._exceptions import ProviderError, short_body
from ._types import ImageResponse

if TYPE_CHECKING:
    from cache import AuthCache

    from ._client import Call
    from ._transport import Request


class DeepInfra(Provider):
    """DeepInfra (``/v1/openai/chat/completions``, ``/v1/inference/<model>``, ``/models/featured``)."""

    label = "DeepInfra"
    url = "https://deepinfra.com"
    api_base = "https://api.deepinfra.com"
    chat_path = "/v1/openai/chat/completions"
    models_path = "/models/featured"
    inference_path = "/v1/inference/"
    send_origin = True
    headers: ClassVar[dict[str, str]] = {"X-Deepinfra-Source": "web-embed"}
    default_model = "meta-llama/Meta-Llama-3.1-70B-Instruct"
    default_image_model = "stabilityai/sd3.5"
    models: ClassVar[list[str]] = [
        "meta-llama/Meta-Llama-3.1-70B-Instruct",
        "meta-llama/Meta-Llama-3.1-8B-Instruct",
        "Qwen/Qwen2.5-72B-Instruct",
        "deepseek-ai/DeepSeek-R1",
    ]
    image_models: ClassVar[list[str]] = ["stabilityai/sd3.5", "black-forest-labs/FLUX-1-schnell"]
    model_aliases: ClassVar[dict[str, str]] = {
        "llama-3.1-70b": "meta-llama/Meta-Llama-3.1-70B-Instruct",
        "llama-3.1-8b": "meta-llama/Meta-Llama-3.1-8B-Instruct",
        "qwen-2.5-72b": "Qwen/Qwen2.5-72B-Instruct",
        "deepseek-r1": "deepseek-ai/DeepSeek-R1",
        "sd-3.5": "stabilityai/sd3.5",
        "flux-schnell": "black-forest-labs/FLUX-1-schnell",
    }

    @classmethod
    def _parse_models(cls, data: Any) -> tuple[list[str], list[str]]:
        text: list[str] = []
        images: list[str] = []
        for model in data:
            if model.get("type") == "text-generation":
                text.append(str(model["model_name"]))
            elif model.get("reported_type") == "text-to-image":
                images.append(str(model["model_name"]))
        return text, images

    @classmethod
    async def create_async_image(
        cls,
        prompt: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        proxy: str | None = None,
        timeout: float = 180,
        base_url: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        cache: AuthCache | None = None,
    ) -> ImageResponse:
        """Generate images for ``prompt``; the answer holds URLs or ``data:`` URIs (``Client.image`` on the
        loop's default client).

        Raises:
            ModelNotFoundError, MissingAuthError, ResponseStatusError, ProviderError (no image in the answer).
        """
        client = cls.client(cache=cache, base_url=base_url, proxy=proxy)
        return await client.image(prompt, model, api_key=api_key, timeout=timeout, extra_body=extra_body)

    @classmethod
    def _image_request(cls, call: Call, model: str, prompt: str, extra_body: Mapping[str, Any] | None) -> Request:
        return cls._request(
            call, "POST", call.url(cls.inference_path + model), {"prompt": prompt, **(extra_body or {})}
        )

    @classmethod
    def _image_response(cls, raw: bytes, prompt: str, model: str) -> ImageResponse:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProviderError(f"deepinfra: the image answer is not JSON: {short_body(raw, 80)}") from exc
        images = data.get("output") or data.get("images") or data.get("image_url") if isinstance(data, dict) else None
        if isinstance(images, str):
            images = [images]
        if not images:
            raise ProviderError(f"deepinfra: no image in the answer: {short_body(raw, 120)}", provider=cls.name())
        return ImageResponse(tuple(str(image) for image in images), prompt, model)

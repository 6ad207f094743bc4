"""Helpers for the service tests: test images, concurrent posts, decoding responses."""

from __future__ import annotations

import io

import httpx
import numpy as np
from PIL import Image


def encode_image(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def fmnist_images(n: int) -> list[Image.Image]:
    from training.data import load_fashion_mnist

    x, _ = load_fashion_mnist("test", limit=n)
    return [Image.fromarray(np.round(a[0].numpy() * 255).astype(np.uint8), "L") for a in x]


async def post_concurrently(url: str, bodies: list[bytes], timeout: float = 120) -> list:
    """POST every body to /purify at once; the responses in order."""
    import asyncio

    async with httpx.AsyncClient(timeout=timeout) as client:
        return await asyncio.gather(
            *(
                client.post(f"{url}/purify", content=b, headers={"Content-Type": "image/png"})
                for b in bodies
            )
        )


def decode_response(response: httpx.Response) -> Image.Image:
    img = Image.open(io.BytesIO(response.content))
    img.load()
    return img

"""The hostile and odd inputs, generated here (nothing downloaded), each with the
outcome the service documents for it (docs/reliability.md).

    python -m tests.hostile_corpus OUT_DIR    # writes every case as a file, for manual use
"""

from __future__ import annotations

import base64
import io
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

BODY_LIMIT = 25 * 1024 * 1024  # PURIFIER_MAX_BODY_BYTES default


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    content_type: str
    status: int
    code: str | None = None  # the error code, for 4xx
    size: tuple[int, int] | None = None  # expected (width, height) of a purified image
    mode: str | None = None  # expected mode of a purified image
    what: str = ""


def save(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def photo(width: int = 30, height: int = 20, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR declaring width x height, a tiny IDAT: decoding it
    would allocate width*height bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def jpeg_header_bomb(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 frame header is rewritten to declare width x height."""
    data = bytearray(save(photo(16, 16, "L"), "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def palette_with_transparency() -> bytes:
    img = photo(24, 24, "RGB").quantize(16)
    return save(img, "PNG", transparency=0)


def png_16bit() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 65536, (20, 30), dtype=np.uint16)
    return save(Image.fromarray(pixels), "PNG")


def animated(fmt: str) -> bytes:
    frames = [photo(20, 20, "RGB"), photo(21, 20, "RGB").resize((20, 20))]
    return save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_oriented(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(photo(30, 20, "RGB"), "JPEG", quality=90, exif=exif.tobytes())


def polyglot() -> bytes:
    """A PNG with a zip archive appended: valid as both."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("payload.txt", "PK polyglot payload")
    return save(photo(30, 20, "L"), "PNG") + archive.getvalue()


def multipart_many_parts() -> bytes:
    parts = [
        f'--B\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'.encode()
        for i in range(200)
    ]
    image = save(photo(30, 20, "L"), "PNG")
    parts.append(
        b'--B\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + image + b"\r\n"
    )
    return b"".join(parts) + b"--B--\r\n"


GIF_BOMB = (
    "R0lGODlhFFVVVVXk6gAh/wv/////AAoDAQAAAAAAIfkE/////wAKAAAALAAh/wv/////AAoDAQAAAAAAIfkE"
    "/////wAKAAAALJ//////AAAAAAAAO5//////AAAAAAAAOw=="
)
PNG = "image/png"
JPEG = "image/jpeg"
ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height

CASES = [
    Case("zero_bytes", lambda: b"", PNG, 400, "empty_body", what="empty body"),
    Case(
        "truncated_png",
        lambda: save(photo(), "PNG")[:200],
        PNG,
        400,
        "corrupt_image",
        what="first 200 bytes of a PNG",
    ),
    Case(
        "truncated_jpeg",
        lambda: save(photo(64, 64), "JPEG")[:400],
        JPEG,
        400,
        "corrupt_image",
        what="first 400 bytes of a JPEG",
    ),
    Case("one_by_one", lambda: save(photo(1, 1, "L"), "PNG"), PNG, 200, size=(1, 1), mode="L"),
    Case(
        "png_bomb_100000x100000",
        lambda: png_header_bomb(100_000, 100_000),
        PNG,
        413,
        "too_many_pixels",
        what="PNG header declaring 10^10 pixels",
    ),
    Case(
        "jpeg_bomb_50000x50000",
        lambda: jpeg_header_bomb(50_000, 50_000),
        JPEG,
        413,
        "too_many_pixels",
        what="JPEG frame header declaring 2.5 * 10^9 pixels",
    ),
    Case(
        "palette_transparency",
        palette_with_transparency,
        PNG,
        200,
        size=(24, 24),
        mode="P",
        what="16-colour palette PNG, index 0 transparent",
    ),
    Case(
        "cmyk_jpeg",
        lambda: save(photo().convert("CMYK"), "JPEG", quality=90),
        JPEG,
        200,
        size=(30, 20),
        mode="CMYK",
    ),
    Case("png_16bit", png_16bit, PNG, 200, size=(30, 20), mode="I;16"),
    Case("animated_gif", lambda: animated("GIF"), "image/gif", 415, "unsupported_media_type"),
    Case("animated_webp", lambda: animated("WEBP"), "image/webp", 415, "animated_image"),
    Case(
        "gif_bomb_found_by_atheris",
        lambda: base64.b64decode(GIF_BOMB),
        "image/gif",
        415,
        "unsupported_media_type",
        what="97-byte GIF declaring 73983x68606: Pillow's GIF parser allocated 4 GB while "
        "opening it, before any size check, until decode stopped offering other parsers",
    ),
    *(
        Case(
            f"exif_orientation_{o}",
            lambda o=o: exif_oriented(o),
            JPEG,
            200,
            size=(20, 30) if o in ROTATED else (30, 20),
            mode="RGB",
            what="30x20 JPEG; the result is the image as displayed",
        )
        for o in range(1, 9)
    ),
    Case(
        "polyglot_png_zip",
        polyglot,
        PNG,
        200,
        size=(30, 20),
        mode="L",
        what="PNG + zip; the zip does not survive",
    ),
    Case(
        "wrong_content_type_text",
        lambda: save(photo(), "PNG"),
        "text/plain",
        415,
        "unsupported_media_type",
        what="a PNG sent as text/plain",
    ),
    Case(
        "mislabelled_image_type",
        lambda: save(photo(), "PNG"),
        JPEG,
        200,
        size=(30, 20),
        mode="RGB",
        what="a PNG sent as image/jpeg: the bytes decide",
    ),
    Case(
        "multipart_many_parts",
        multipart_many_parts,
        "multipart/form-data; boundary=B",
        400,
        "bad_multipart",
        what="200 form fields before the image",
    ),
    Case(
        "body_over_limit",
        lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * BODY_LIMIT,
        PNG,
        413,
        "body_too_large",
        what="25 MiB + 8 bytes",
    ),
]


def outcome(case: Case) -> str:
    if case.status != 200:
        return f"{case.status} `{case.code}`"
    return f"200, {case.size[0]}x{case.size[1]} {case.mode}"


def markdown_table() -> str:
    """docs/reliability.md's table of documented outcomes (a test keeps them equal)."""
    rows = ["| input | sent as | outcome |", "|---|---|---|"]
    for c in CASES:
        what = f" ({c.what})" if c.what else ""
        rows.append(f"| `{c.name}`{what} | `{c.content_type}` | {outcome(c)} |")
    return "\n".join(rows) + "\n"


def main(out_dir: str) -> None:
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        (root / case.name).write_bytes(case.make())
    print(f"wrote {len(CASES)} files to {root}")


if __name__ == "__main__":
    main(sys.argv[1])

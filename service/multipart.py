"""The `image` file field of a multipart/form-data body, parsed in memory with
python-multipart.

Starlette's form parser wraps every file part in a SpooledTemporaryFile and an
UploadFile; the body here is already in memory and capped, so the part's bytes are
collected directly (no temporary file can ever reach the disk, and the parse costs
less of the event loop's time).
"""

from __future__ import annotations

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import ServiceError

MAX_PARTS = 9  # the image and a few form fields a browser or client library adds
MAX_HEADERS_PER_PART = 8


class _Part:
    __slots__ = ("data", "disposition", "is_file", "name")

    def __init__(self) -> None:
        self.data = bytearray()
        self.disposition = b""
        self.name: bytes | None = None
        self.is_file = False


def _bad(message: str) -> ServiceError:
    return ServiceError(400, "bad_multipart", f"multipart body refused: {message}")


def multipart_image(body: bytes, content_type: str) -> bytes:
    """The bytes of the file field `image`; 400 when the body is not valid multipart or
    has no such file field."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise _bad("no boundary in Content-Type")
    parts: list[_Part] = []
    header: dict[str, bytes] = {"field": b"", "value": b""}

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise _bad(f"more than {MAX_PARTS} parts")
        parts.append(_Part())

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        if header["field"].lower() == b"content-disposition":
            parts[-1].disposition = header["value"]
        header["field"] = header["value"] = b""

    def on_headers_finished() -> None:
        part = parts[-1]
        _, options = parse_options_header(part.disposition)
        part.name = options.get(b"name")
        part.is_file = b"filename" in options

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
        max_header_count=MAX_HEADERS_PER_PART,
    )
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as err:
        raise _bad("invalid multipart data") from err
    files = [p for p in parts if p.is_file]
    if len(files) > 1:
        raise _bad(f"{len(files)} files; send one, in the field 'image'")
    if not files or files[0].name != b"image":
        raise ServiceError(400, "missing_image", "multipart body has no file field 'image'")
    return bytes(files[0].data)

"""Coverage-guided fuzzing of image decode (atheris, libFuzzer) - Pillow's parsers are
instrumented, so the fuzzer learns its way into PNG/JPEG/WebP/BMP/TIFF internals.

    python -m tests.fuzz.atheris_decode -max_total_time=60 -artifact_prefix=/tmp/ SEED_DIR

Any exception other than ImageError (a 4xx for the service) is a crash: libFuzzer
stops, writes the input to `artifact_prefix` and exits non-zero.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import PIL.Image
    import PIL.ImageOps  # EXIF orientation

    PIL.Image.init()  # every format plugin, imported here so that it is instrumented
    from service.imaging import ImageError, decode, encode

MAX_PIXELS = 4_000_000


def test_one_input(data: bytes) -> None:
    try:
        decoded = decode(data, 1, MAX_PIXELS)
    except ImageError as err:
        if not 400 <= err.status < 500:
            raise
        return
    encode(decoded, decoded.pixels, "png", 90)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

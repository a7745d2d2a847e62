"""Payload checks: every kind of bad input is rejected with its reason; good input becomes PNG."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from facepipe import imaging
from facepipe.contract import JPEG, PNG, ContractError

LIMIT_BYTES = 2 * 1024 * 1024
LIMIT_PIXELS = 4096 * 4096


def face_image() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)


def png_bytes() -> bytes:
    return imaging.encode(face_image(), PNG)


def jpeg_bytes() -> bytes:
    return imaging.encode(face_image(), JPEG)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return imaging.PNG_SIGNATURE + chunk + imaging.PNG_IEND


def reason(payload: bytes, declared: str | None = None, max_bytes: int = LIMIT_BYTES) -> str:
    with pytest.raises(ContractError) as info:
        imaging.as_png(payload, declared, max_bytes, LIMIT_PIXELS)
    return info.value.reason


def test_png_passes_through_unchanged() -> None:
    payload = png_bytes()
    assert imaging.as_png(payload, PNG, LIMIT_BYTES, LIMIT_PIXELS) is payload


def test_jpeg_is_reencoded_as_png_with_the_same_size() -> None:
    out = imaging.as_png(jpeg_bytes(), JPEG, LIMIT_BYTES, LIMIT_PIXELS)
    assert out.startswith(imaging.PNG_SIGNATURE)
    assert cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED).shape == (64, 48, 3)


def test_reasons() -> None:
    assert reason(b"") == "empty"
    assert reason(b"x" * 100, max_bytes=50) == "too_large"
    assert reason(b"hello, not an image") == "not_image"
    assert reason(b"%PDF-1.7 ...") == "not_image"
    assert reason(png_bytes(), JPEG) == "bad_content_type"
    assert reason(png_bytes()[:-30]) == "undecodable"
    assert reason(jpeg_bytes()[: len(jpeg_bytes()) // 2]) == "undecodable"
    assert reason(png_declaring(100_000, 100_000)) == "too_many_pixels"
    assert reason(png_declaring(0, 10)) == "undecodable"
    corrupt = bytearray(png_bytes())
    corrupt[60:80] = b"\x00" * 20
    assert reason(bytes(corrupt)) == "undecodable"


def test_jpeg_declaring_huge_dimensions_is_rejected_before_decoding() -> None:
    payload = bytearray(jpeg_bytes())
    sof = payload.find(b"\xff\xc0")
    struct.pack_into(">HH", payload, sof + 5, 60000, 60000)
    with pytest.raises(ContractError) as info:
        imaging.validate(bytes(payload), None, LIMIT_BYTES, LIMIT_PIXELS)
    assert info.value.reason == "too_many_pixels"


def test_sniff() -> None:
    assert imaging.sniff(png_bytes()) == PNG
    assert imaging.sniff(jpeg_bytes()) == JPEG
    assert imaging.sniff(b"GIF89a") is None


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of(
    rows: list[bytes], *, depth: int = 8, colour: int = 0, before_idat: bytes = b"", split_idat: bytes = b"", crc_delta: int = 0
) -> bytes:
    """A hand-built PNG of `rows` (each starting with its filter byte), one pixel byte per grey 8-bit pixel."""
    width = (len(rows[0]) - 1) * 8 // (depth * imaging.PNG_CHANNELS[colour])
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, len(rows), depth, colour, 0, 0, 0))
    data = zlib.compress(b"".join(rows))
    idat = chunk(b"IDAT", data[:10]) + split_idat + chunk(b"IDAT", data[10:])
    if crc_delta:
        idat = idat[:-1] + bytes([(idat[-1] + crc_delta) % 256])
    return imaging.PNG_SIGNATURE + ihdr + before_idat + idat + imaging.PNG_IEND


def test_hand_built_png_is_accepted_and_decodes() -> None:
    payload = png_of([bytes([f]) + bytes(range(16)) for f in range(5)])
    assert imaging.as_png(payload, PNG, LIMIT_BYTES, LIMIT_PIXELS) is payload
    assert cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED).shape == (5, 16)


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (png_of([b"\x00" + bytes(16)] * 4, crc_delta=1), "fails its CRC"),
        (png_of([b"\x00" + bytes(16), b"\x05" + bytes(16)]), "filter type 5"),
        (png_of([b"\x00" + bytes(24)], depth=4, colour=2), "not a valid combination"),
        (png_of([b"\x00" + bytes(16)] * 2, colour=3), "without a PLTE"),
        (png_of([b"\x00" + bytes(16)] * 2, before_idat=chunk(b"ABCD", b"")), "unknown critical chunk"),
        (png_of([b"\x00" + bytes(16)] * 2, before_idat=chunk(b"acTL", bytes(8))), "animated"),
        (png_of([b"\x00" + bytes(16)] * 2, before_idat=chunk(b"ab\x00d", b"")), "not four ASCII letters"),
        (png_of([b"\x00" + bytes(16)] * 2, colour=3, before_idat=chunk(b"PLTE", bytes(4))), "not 1-256 RGB entries"),
        (png_of([b"\x00" + bytes(16)] * 2, split_idat=chunk(b"tEXt", b"a\x00b")), "consecutive"),
    ],
)
def test_png_that_no_decoder_accepts_is_rejected_without_decoding(payload: bytes, detail: str) -> None:
    with pytest.raises(ContractError, match=detail) as info:
        imaging.validate(payload, PNG, LIMIT_BYTES, LIMIT_PIXELS)
    assert info.value.reason == "undecodable"
    assert cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED) is None, "OpenCV would have refused it too"


def test_png_with_too_little_or_too_much_image_data_is_rejected() -> None:
    short = png_of([b"\x00" + bytes(16)] * 4)
    ihdr_end = 8 + 25
    lying = bytearray(short)
    struct.pack_into(">I", lying, 8 + 8 + 4, 5)  # the header now says 5 rows, the data holds 4
    lying[ihdr_end - 4 : ihdr_end] = struct.pack(">I", zlib.crc32(bytes(lying[12 : ihdr_end - 4])))
    with pytest.raises(ContractError, match="ends after 68 of the 85 bytes"):
        imaging.validate(bytes(lying), PNG, LIMIT_BYTES, LIMIT_PIXELS)

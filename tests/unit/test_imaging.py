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

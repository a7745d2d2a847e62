"""Checks and conversions of face images: sniff, bound, decode and (re-)encode.

Dimensions are read from the header before anything is decoded, so a small payload that
declares a huge image (a decompression bomb) is rejected without allocating it.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from facepipe.contract import JPEG, PNG, ContractError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...), not DHT/JPG/DAC.
JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def sniff(payload: bytes) -> str | None:
    """The image content type the payload's magic bytes say, or None."""
    if payload.startswith(PNG_SIGNATURE):
        return PNG
    if payload.startswith(JPEG_SOI):
        return JPEG
    return None


PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
ADAM7_PASSES = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_size(payload: bytes) -> tuple[int, int]:
    if len(payload) < 33 or payload[12:16] != b"IHDR":
        raise ContractError("undecodable", "PNG without an IHDR header")
    width, height = struct.unpack(">II", payload[16:24])
    return width, height


def png_raw_bytes(width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool) -> int:
    """How many bytes the IDAT stream must inflate to: a filter byte plus packed pixels per row, per pass."""
    bits = bit_depth * PNG_CHANNELS.get(colour_type, 4)

    def rows(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * bits + 7) // 8)

    if not interlaced:
        return rows(width, height)
    return sum(rows((width - x + dx - 1) // dx, (height - y + dy - 1) // dy) for x, y, dx, dy in ADAM7_PASSES)


def check_png_structure(payload: bytes, width: int, height: int) -> None:
    """Walk the chunks (none may claim more bytes than the payload has) and inflate the image data with a
    bound: decoders allocate what a chunk length says, and a zlib bomb inflates far past its image."""
    bit_depth, colour_type, _compression, _filter, interlace = payload[24:29]
    pos, idat = 8, []
    while pos + 12 <= len(payload):
        (length,) = struct.unpack(">I", payload[pos : pos + 4])
        kind = payload[pos + 4 : pos + 8]
        if pos + 12 + length > len(payload):
            raise ContractError("undecodable", f"PNG chunk {kind!r} claims {length} bytes past the end of the payload")
        if kind == b"IDAT":
            idat.append(payload[pos + 8 : pos + 8 + length])
        pos += 12 + length
    expected = png_raw_bytes(width, height, bit_depth, colour_type, interlace == 1)
    inflater = zlib.decompressobj()
    try:
        inflated = len(inflater.decompress(b"".join(idat), expected + 1))
    except zlib.error as exc:
        raise ContractError("undecodable", f"PNG image data does not inflate: {exc}") from None
    if inflated > expected or inflater.unconsumed_tail:
        raise ContractError("undecodable", f"PNG image data inflates past the {expected} bytes its header declares")


def jpeg_size(payload: bytes) -> tuple[int, int]:
    """Walk the JPEG markers up to the first start-of-frame and read its dimensions."""
    pos = 2
    while pos + 4 <= len(payload):
        if payload[pos] != 0xFF:
            raise ContractError("undecodable", f"JPEG marker expected at byte {pos}")
        marker = payload[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", payload[pos + 2 : pos + 4])
        if length < 2:
            raise ContractError("undecodable", "JPEG segment with a bad length")
        if marker in JPEG_SOF_MARKERS:
            if pos + 9 > len(payload):
                break
            height, width = struct.unpack(">HH", payload[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    raise ContractError("undecodable", "JPEG without a start-of-frame header")


def validate(payload: bytes, declared: str | None, max_bytes: int, max_pixels: int) -> tuple[str, np.ndarray]:
    """Check a face payload and decode it; return (content type, image) or raise ContractError."""
    if not payload:
        raise ContractError("empty", "empty payload")
    if len(payload) > max_bytes:
        raise ContractError("too_large", f"{len(payload)} bytes exceeds the limit of {max_bytes}")
    kind = sniff(payload)
    if kind is None:
        raise ContractError("not_image", f"payload starts with {payload[:8].hex()}, neither PNG nor JPEG")
    if declared is not None and declared != kind:
        raise ContractError("bad_content_type", f"content type {declared!r} but the payload is {kind}")
    if kind == PNG:
        width, height = png_size(payload)
        complete = payload.endswith(PNG_IEND)
    else:
        width, height = jpeg_size(payload)
        complete = payload.rstrip(b"\x00").endswith(JPEG_EOI)
    if width == 0 or height == 0:
        raise ContractError("undecodable", f"image declares {width}x{height} pixels")
    if width * height > max_pixels:
        raise ContractError("too_many_pixels", f"{width}x{height} exceeds the limit of {max_pixels} pixels")
    if not complete:
        raise ContractError("undecodable", f"truncated {kind} (no end marker)")
    if kind == PNG:
        check_png_structure(payload, width, height)
    image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ContractError("undecodable", f"{kind} does not decode")
    if image.shape[0] != height or image.shape[1] != width:
        raise ContractError("undecodable", f"decoded {image.shape[1]}x{image.shape[0]}, header says {width}x{height}")
    return kind, image


def encode(image: np.ndarray, content_type: str, png_compression: int = 1, jpeg_quality: int = 90) -> bytes:
    """Encode an image as PNG or JPEG."""
    if content_type == PNG:
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, png_compression])
    else:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {content_type}")
    return buf.tobytes()


def as_png(payload: bytes, declared: str | None, max_bytes: int, max_pixels: int) -> bytes:
    """Validate a payload and return PNG bytes: the payload itself when it is PNG, else re-encoded."""
    kind, image = validate(payload, declared, max_bytes, max_pixels)
    return payload if kind == PNG else encode(image, PNG)

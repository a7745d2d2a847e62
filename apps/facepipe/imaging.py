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
PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # allowed, by colour type
PNG_MAX_FILTER = 4  # None, Sub, Up, Average, Paeth
PNG_CRITICAL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
# Animation (APNG) and Apple's CgBI variant: never in a face crop, and decoders differ on them.
PNG_REFUSED_CHUNKS = {b"acTL", b"fcTL", b"fdAT", b"CgBI"}
ADAM7_PASSES = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_size(payload: bytes) -> tuple[int, int]:
    if len(payload) < 33 or payload[12:16] != b"IHDR":
        raise ContractError("undecodable", "PNG without an IHDR header")
    width, height = struct.unpack(">II", payload[16:24])
    return width, height


def png_rows(width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool) -> list[tuple[int, int]]:
    """(row count, bytes per row incl. its filter byte) of each pass of the image data: one pass, or Adam7's seven."""
    bits = bit_depth * PNG_CHANNELS[colour_type]
    passes = ADAM7_PASSES if interlaced else ((0, 0, 1, 1),)
    shapes = [((width - x + dx - 1) // dx, (height - y + dy - 1) // dy) for x, y, dx, dy in passes]
    return [(h, 1 + (w * bits + 7) // 8) for w, h in shapes if w and h]


def _png_chunks(payload: bytes) -> list[tuple[bytes, int, int]]:
    """(type, data start, data end) of every chunk, each checked against its CRC; none may claim bytes past the end."""
    pos, chunks = 8, []
    while pos < len(payload):
        if pos + 12 > len(payload):
            raise ContractError("undecodable", f"PNG ends inside a chunk header at byte {pos}")
        (length,) = struct.unpack(">I", payload[pos : pos + 4])
        kind, start, end = payload[pos + 4 : pos + 8], pos + 8, pos + 8 + length
        if end + 4 > len(payload):
            raise ContractError("undecodable", f"PNG chunk {kind!r} claims {length} bytes past the end of the payload")
        (crc,) = struct.unpack(">I", payload[end : end + 4])
        if zlib.crc32(payload[pos + 4 : end]) != crc:
            raise ContractError("undecodable", f"PNG chunk {kind!r} at byte {pos} fails its CRC")
        chunks.append((kind, start, end))
        pos = end + 4
    return chunks


def _check_png_layout(chunks: list[tuple[bytes, int, int]], colour_type: int) -> None:
    """IHDR first, IEND last, the IDAT chunks consecutive, chunk types a decoder accepts (letters only, no
    critical chunk it does not know), and one well-formed palette before the image data where there is one."""
    kinds = [kind for kind, _start, _end in chunks]
    if kinds[0] != b"IHDR" or chunks[0][2] - chunks[0][1] != 13 or kinds.count(b"IHDR") != 1:
        raise ContractError("undecodable", "PNG must start with one 13-byte IHDR chunk")
    if kinds[-1] != b"IEND" or kinds.count(b"IEND") != 1:
        raise ContractError("undecodable", "PNG must end with its only IEND chunk")
    for kind in kinds:
        if not kind.isalpha() or not kind.isascii():
            raise ContractError("undecodable", f"PNG chunk type {kind!r} is not four ASCII letters")
        if kind[:1].isupper() and kind not in PNG_CRITICAL_CHUNKS:
            raise ContractError("undecodable", f"PNG has an unknown critical chunk {kind!r}")
        if kind in PNG_REFUSED_CHUNKS:
            raise ContractError("undecodable", f"PNG has a {kind.decode()} chunk: animated and CgBI PNGs are not face crops")
    idat = [i for i, kind in enumerate(kinds) if kind == b"IDAT"]
    if not idat or idat[-1] - idat[0] + 1 != len(idat):
        raise ContractError("undecodable", "PNG image data (IDAT) missing or not in consecutive chunks")
    palettes = [(i, end - start) for i, (kind, start, end) in enumerate(chunks) if kind == b"PLTE"]
    if colour_type == 3 and not palettes:
        raise ContractError("undecodable", "palette PNG without a PLTE chunk")
    if len(palettes) > 1 or any(i > idat[0] or size % 3 or not 3 <= size <= 768 for i, size in palettes):
        raise ContractError("undecodable", "PNG palette (PLTE) duplicated, after the image data, or not 1-256 RGB entries")


def _check_filters(raw: bytes, rows: list[tuple[int, int]]) -> None:
    """Every row of every pass starts with a filter type libpng knows."""
    data, offset = np.frombuffer(raw, dtype=np.uint8), 0
    for count, stride in rows:
        filters = data[offset : offset + count * stride : stride]
        if filters.size and int(filters.max()) > PNG_MAX_FILTER:
            raise ContractError("undecodable", f"PNG row filter type {int(filters.max())} is not 0-{PNG_MAX_FILTER}")
        offset += count * stride


def check_png(payload: bytes, width: int, height: int) -> None:
    """Everything a decoder would refuse, checked without decoding: chunk lengths and CRCs, IHDR fields, chunk
    order, a zlib stream inflating to exactly the declared size (with a bound: a zlib bomb stops at the size
    the header declares) and valid row filters. Decoders allocate what a chunk length says, so the walk comes
    first. What passes is stored as sent; decoding it would only unfilter pixels nobody looks at here."""
    chunks = _png_chunks(payload)
    bit_depth, colour_type, compression, filter_method, interlace = payload[24:29]
    if bit_depth not in PNG_BIT_DEPTHS.get(colour_type, ()) or compression or filter_method or interlace > 1:
        raise ContractError(
            "undecodable",
            f"PNG header: bit depth {bit_depth}, colour type {colour_type}, compression {compression}, "
            f"filter {filter_method}, interlace {interlace} is not a valid combination",
        )
    _check_png_layout(chunks, colour_type)
    rows = png_rows(width, height, bit_depth, colour_type, interlace == 1)
    expected = sum(count * stride for count, stride in rows)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(payload[start:end] for kind, start, end in chunks if kind == b"IDAT"), expected + 1)
    except zlib.error as exc:
        raise ContractError("undecodable", f"PNG image data does not inflate: {exc}") from None
    if len(raw) > expected or inflater.unconsumed_tail:
        raise ContractError("undecodable", f"PNG image data inflates past the {expected} bytes its header declares")
    if len(raw) < expected or not inflater.eof:
        raise ContractError("undecodable", f"PNG image data ends after {len(raw)} of the {expected} bytes its header declares")
    _check_filters(raw, rows)


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


def validate(payload: bytes, declared: str | None, max_bytes: int, max_pixels: int) -> tuple[str, np.ndarray | None]:
    """Check a face payload; return (content type, decoded image: JPEG only) or raise ContractError.

    A PNG is checked structurally (`check_png`), not decoded: it is stored byte for byte as sent."""
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
        check_png(payload, width, height)
        return kind, None
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
    _kind, image = validate(payload, declared, max_bytes, max_pixels)
    return payload if image is None else encode(image, PNG)

"""Checks and conversions of face images: sniff, bound, decode and (re-)encode.

Dimensions are read from the header before anything is decoded, so a small payload that
declares a huge image (a decompression bomb) is rejected without allocating it; a PNG's image
data is inflated a piece at a time, so even an image at the pixel limit costs a few hundred KB.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from facepipe.contract import JPEG, PNG, ContractError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...), not DHT/JPG/DAC.
JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JPEG_CAMERA_SOF_MARKERS = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman: what encoders write


def sniff(payload: bytes) -> str | None:
    """The image content type the payload's magic bytes say, or None."""
    if payload.startswith(PNG_SIGNATURE):
        return PNG
    if payload.startswith(JPEG_SOI):
        return JPEG
    return None


# What a camera sends: 8-bit grey, grey+alpha, RGB or RGBA, not interlaced (OpenCV writes nothing else). Other
# valid PNGs (16-bit, palette, 1-4 bit, Adam7) are refused as `unsupported_format`: they only widen what a check,
# a store and every later reader must handle.
PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # by colour type, 8 bits each
PNG_VALID_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # what the PNG spec allows
PNG_MAX_FILTER = 4  # None, Sub, Up, Average, Paeth
PNG_CRITICAL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
# Animation (APNG) and Apple's CgBI variant: never in a face crop, and decoders differ on them.
PNG_REFUSED_CHUNKS = {b"acTL", b"fcTL", b"fdAT", b"CgBI"}
# The chunks a stored face keeps; every other one (text, profiles, EXIF, a suggested palette...) is dropped.
PNG_KEPT_CHUNKS = {b"IHDR", b"IDAT", b"IEND"}
# Image data is inflated this much at a time, its row filters checked as it goes: memory does not grow with the image.
INFLATE_PIECE = 64 * 1024
ZLIB_STATE_BYTES = 48 * 1024  # an inflater's window and tables
# Decoded 8-bit pixels of at most 3 components, a progressive decoder's 16-bit coefficients and the PNG encoding.
JPEG_BYTES_PER_PIXEL = 3 + 6 + 3


def png_data_limit(raw_bytes: int) -> int:
    """The most compressed image data `raw_bytes` of pixels can need: deflate's worst case (stored blocks) adds
    5 bytes per 64 KiB and zlib 6; beyond that the stream carries something else (empty blocks), not an image."""
    return raw_bytes + raw_bytes // 256 + 1024


def png_size(payload: bytes) -> tuple[int, int]:
    if len(payload) < 33 or payload[12:16] != b"IHDR":
        raise ContractError("undecodable", "PNG without an IHDR header")
    width, height = struct.unpack(">II", payload[16:24])
    return width, height


def png_stride(width: int, colour_type: int) -> int:
    """Bytes per row of 8-bit image data, its filter byte included."""
    return 1 + width * PNG_CHANNELS[colour_type]


def _png_chunks(payload: bytes) -> list[tuple[bytes, int, int]]:
    """(type, data start, data end) of every chunk, each checked against its CRC; none may claim bytes past the end."""
    pos, chunks, view = 8, [], memoryview(payload)
    while pos < len(payload):
        if pos + 12 > len(payload):
            raise ContractError("undecodable", f"PNG ends inside a chunk header at byte {pos}")
        (length,) = struct.unpack(">I", payload[pos : pos + 4])
        kind, start, end = payload[pos + 4 : pos + 8], pos + 8, pos + 8 + length
        if end + 4 > len(payload):
            raise ContractError("undecodable", f"PNG chunk {kind!r} claims {length} bytes past the end of the payload")
        (crc,) = struct.unpack(">I", payload[end : end + 4])
        if zlib.crc32(view[pos + 4 : end]) != crc:
            raise ContractError("undecodable", f"PNG chunk {kind!r} at byte {pos} fails its CRC")
        chunks.append((kind, start, end))
        pos = end + 4
    return chunks


def _check_png_header(payload: bytes) -> int:
    """The IHDR fields: invalid ones are `undecodable`, valid ones a camera never writes `unsupported_format`.
    Returns the colour type."""
    bit_depth, colour_type, compression, filter_method, interlace = payload[24:29]
    if bit_depth not in PNG_VALID_BIT_DEPTHS.get(colour_type, ()) or compression or filter_method or interlace > 1:
        raise ContractError(
            "undecodable",
            f"PNG header: bit depth {bit_depth}, colour type {colour_type}, compression {compression}, "
            f"filter {filter_method}, interlace {interlace} is not a valid combination",
        )
    if bit_depth != 8 or colour_type not in PNG_CHANNELS or interlace:
        raise ContractError(
            "unsupported_format",
            f"PNG with bit depth {bit_depth}, colour type {colour_type}{', interlaced' if interlace else ''}: "
            "faces are 8-bit grey, grey+alpha, RGB or RGBA, not interlaced",
        )
    return colour_type


def _check_png_layout(chunks: list[tuple[bytes, int, int]]) -> None:
    """IHDR first, IEND last, the IDAT chunks consecutive, chunk types a decoder accepts (letters only, no
    critical chunk it does not know), and at most one palette (a suggestion for RGB), before the image data."""
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
    if len(palettes) > 1 or any(i > idat[0] or size % 3 or not 3 <= size <= 768 for i, size in palettes):
        raise ContractError("undecodable", "PNG palette (PLTE) duplicated, after the image data, or not 1-256 RGB entries")


class _RowFilters:
    """Checks the filter byte that starts every row of an image data stream fed to it piece by piece."""

    def __init__(self, stride: int, total: int) -> None:
        self.stride, self.total, self.seen = stride, total, 0

    def feed(self, piece: bytes) -> None:
        if self.seen + len(piece) > self.total:
            raise ContractError("undecodable", f"PNG image data inflates past the {self.total} bytes its header declares")
        first = -self.seen % self.stride
        filters = np.frombuffer(piece, dtype=np.uint8)[first :: self.stride]
        if filters.size and int(filters.max()) > PNG_MAX_FILTER:
            raise ContractError("undecodable", f"PNG row filter type {int(filters.max())} is not 0-{PNG_MAX_FILTER}")
        self.seen += len(piece)


def _inflate_checked(payload: bytes, idat: list[tuple[bytes, int, int]], rows: _RowFilters) -> None:
    """Inflate the image data INFLATE_PIECE bytes at a time, checking row filters as they come; the stream must
    end exactly where the image does, with nothing after it."""
    inflater = zlib.decompressobj()
    view = memoryview(payload)
    try:
        for _kind, start, end in idat:
            data: bytes | memoryview = view[start:end]
            while data:
                if inflater.eof:
                    raise ContractError("undecodable", "PNG image data continues after the end of its zlib stream")
                rows.feed(inflater.decompress(data, INFLATE_PIECE))
                data = inflater.unconsumed_tail
        while not inflater.eof and (piece := inflater.decompress(b"", INFLATE_PIECE)):
            rows.feed(piece)  # output zlib held back when a piece filled up exactly at the end of the input
    except zlib.error as exc:
        raise ContractError("undecodable", f"PNG image data does not inflate: {exc}") from None
    if inflater.unused_data:
        raise ContractError("undecodable", "PNG image data continues after the end of its zlib stream")
    if rows.seen < rows.total or not inflater.eof:
        raise ContractError("undecodable", f"PNG image data ends after {rows.seen} of the {rows.total} bytes its header declares")


def check_png(payload: bytes, width: int, height: int) -> bytes:
    """Everything a decoder would refuse, checked without decoding and in bounded memory: chunk lengths and CRCs,
    IHDR fields, chunk order, a zlib stream inflating (a piece at a time) to exactly the declared size with valid
    row filters. Returns the PNG to store: the payload itself, or a copy without the chunks a face does not need.
    Decoders allocate what a chunk length says, so the walk comes first."""
    chunks = _png_chunks(payload)
    colour_type = _check_png_header(payload)
    _check_png_layout(chunks)
    stride = png_stride(width, colour_type)
    idat = [chunk for chunk in chunks if chunk[0] == b"IDAT"]
    compressed = sum(end - start for _kind, start, end in idat)
    if compressed > png_data_limit(stride * height):
        raise ContractError("bloated", f"{compressed} bytes of PNG image data for {stride * height} bytes of pixels")
    _inflate_checked(payload, idat, _RowFilters(stride, stride * height))
    if all(kind in PNG_KEPT_CHUNKS for kind, _start, _end in chunks):
        return payload
    kept = b"".join(payload[start - 8 : end + 4] for kind, start, end in chunks if kind in PNG_KEPT_CHUNKS)
    return PNG_SIGNATURE + kept


@dataclass(frozen=True)
class JpegFrame:
    """A JPEG's start-of-frame header."""

    marker: int
    precision: int
    width: int
    height: int
    components: int


def jpeg_frame(payload: bytes) -> JpegFrame:
    """Walk the JPEG markers up to the first start-of-frame and read it."""
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
            if pos + 10 > len(payload):
                break
            precision, height, width, components = struct.unpack(">BHHB", payload[pos + 4 : pos + 10])
            return JpegFrame(marker, precision, width, height, components)
        pos += 2 + length
    raise ContractError("undecodable", "JPEG without a start-of-frame header")


def _check_jpeg_frame(frame: JpegFrame) -> None:
    if frame.marker not in JPEG_CAMERA_SOF_MARKERS or frame.precision != 8 or frame.components not in (1, 3):
        raise ContractError(
            "unsupported_format",
            f"JPEG frame type {frame.marker:#x}, {frame.precision}-bit, {frame.components} components: "
            "faces are 8-bit grey or colour, baseline or progressive",
        )


def check_face(payload: bytes, declared: str | None, max_bytes: int, max_pixels: int, max_size: tuple[int, int] | None = None) -> bytes:
    """Check a face payload and return the PNG to store for it (the PNG as sent without the chunks a face does not
    need, or the JPEG re-encoded), or raise ContractError saying why not.

    `max_size` is the largest (width, height) the face's metadata allows (`contract.max_crop_size`). Limits are
    checked from the header before anything is inflated or decoded. A PNG is checked structurally (`check_png`),
    never decoded; a JPEG is decoded and re-encoded."""
    if not payload:
        raise ContractError("empty", "empty payload")
    if len(payload) > max_bytes:
        raise ContractError("too_large", f"{len(payload)} bytes exceeds the limit of {max_bytes}")
    kind = sniff(payload)
    if kind is None:
        raise ContractError("not_image", f"payload starts with {payload[:8].hex()}, neither PNG nor JPEG")
    if declared is not None and declared != kind:
        raise ContractError("bad_content_type", f"content type {declared!r} but the payload is {kind}")
    frame = None if kind == PNG else jpeg_frame(payload)
    width, height = png_size(payload) if frame is None else (frame.width, frame.height)
    if width == 0 or height == 0:
        raise ContractError("undecodable", f"image declares {width}x{height} pixels")
    if width * height > max_pixels:
        raise ContractError("too_many_pixels", f"{width}x{height} exceeds the limit of {max_pixels} pixels")
    if max_size is not None and (width > max_size[0] or height > max_size[1]):
        raise ContractError("bbox_mismatch", f"{width}x{height} image where its face box allows at most {max_size[0]}x{max_size[1]}")
    complete = payload.endswith(PNG_IEND) if kind == PNG else payload.rstrip(b"\x00").endswith(JPEG_EOI)
    if not complete:
        raise ContractError("undecodable", f"truncated {kind} (no end marker)")
    if frame is None:
        return check_png(payload, width, height)
    _check_jpeg_frame(frame)
    image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ContractError("undecodable", f"{kind} does not decode")
    if image.shape[0] != height or image.shape[1] != width:
        raise ContractError("undecodable", f"decoded {image.shape[1]}x{image.shape[0]}, header says {width}x{height}")
    return encode(image, PNG)


def check_cost(payload: bytes, max_pixels: int) -> int:
    """The memory `check_face` may need for this payload beyond the payload itself, from its header alone: a PNG's
    inflate pieces and the copy without dropped chunks; a JPEG's decoded pixels (and progressive coefficients)
    and their PNG encoding, at most what the pixel limit allows."""
    kind = sniff(payload)
    if kind == PNG:
        return len(payload) + 2 * INFLATE_PIECE + ZLIB_STATE_BYTES
    if kind == JPEG:
        try:
            frame = jpeg_frame(payload)
        except ContractError:
            return len(payload)
        return len(payload) + JPEG_BYTES_PER_PIXEL * min(frame.width * frame.height, max_pixels)
    return 0


def encode(image: np.ndarray, content_type: str, png_compression: int = 1, jpeg_quality: int = 90) -> bytes:
    """Encode an image as PNG or JPEG."""
    if content_type == PNG:
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, png_compression])
    else:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {content_type}")
    return buf.tobytes()

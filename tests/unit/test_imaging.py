"""Payload checks: every kind of bad input is rejected with its reason; good input becomes PNG."""

import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest

from facepipe import contract, imaging
from facepipe.contract import JPEG, PNG, ContractError

LIMIT_BYTES = 2 * 1024 * 1024
LIMIT_PIXELS = contract.DEFAULT_MAX_PIXELS


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


def as_png(payload: bytes, declared: str | None = None, max_bytes: int = LIMIT_BYTES, max_pixels: int = LIMIT_PIXELS) -> bytes:
    return imaging.check_face(payload, declared, max_bytes, max_pixels)


def reason(payload: bytes, declared: str | None = None, max_bytes: int = LIMIT_BYTES, max_pixels: int = LIMIT_PIXELS) -> str:
    with pytest.raises(ContractError) as info:
        as_png(payload, declared, max_bytes, max_pixels)
    return info.value.reason


def test_png_passes_through_unchanged() -> None:
    payload = png_bytes()
    assert as_png(payload, PNG) is payload


def test_jpeg_is_reencoded_as_png_with_the_same_size() -> None:
    out = as_png(jpeg_bytes(), JPEG)
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
        imaging.check_face(bytes(payload), None, LIMIT_BYTES, LIMIT_PIXELS)
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
    assert as_png(payload, PNG) is payload
    assert cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED).shape == (5, 16)


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (png_of([b"\x00" + bytes(16)] * 4, crc_delta=1), "fails its CRC"),
        (png_of([b"\x00" + bytes(16), b"\x05" + bytes(16)]), "filter type 5"),
        (png_of([b"\x00" + bytes(24)], depth=4, colour=2), "not a valid combination"),
        (png_of([b"\x00" + bytes(16)] * 2, before_idat=chunk(b"ABCD", b"")), "unknown critical chunk"),
        (png_of([b"\x00" + bytes(16)] * 2, before_idat=chunk(b"acTL", bytes(8))), "animated"),
        (png_of([b"\x00" + bytes(16)] * 2, before_idat=chunk(b"ab\x00d", b"")), "not four ASCII letters"),
        (png_of([b"\x00" + bytes(16)] * 2, split_idat=chunk(b"tEXt", b"a\x00b")), "consecutive"),
    ],
)
def test_png_that_no_decoder_accepts_is_rejected_without_decoding(payload: bytes, detail: str) -> None:
    with pytest.raises(ContractError, match=detail) as info:
        imaging.check_face(payload, PNG, LIMIT_BYTES, LIMIT_PIXELS)
    assert info.value.reason == "undecodable"
    assert cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED) is None, "OpenCV would have refused it too"


def test_png_with_too_little_or_too_much_image_data_is_rejected() -> None:
    short = png_of([b"\x00" + bytes(16)] * 4)
    ihdr_end = 8 + 25
    lying = bytearray(short)
    struct.pack_into(">I", lying, 8 + 8 + 4, 5)  # the header now says 5 rows, the data holds 4
    lying[ihdr_end - 4 : ihdr_end] = struct.pack(">I", zlib.crc32(bytes(lying[12 : ihdr_end - 4])))
    with pytest.raises(ContractError, match="ends after 68 of the 85 bytes"):
        imaging.check_face(bytes(lying), PNG, LIMIT_BYTES, LIMIT_PIXELS)


def ihdr_png(width: int, height: int, depth: int, colour: int, data: bytes, interlace: int = 0, before_idat: bytes = b"") -> bytes:
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))
    return imaging.PNG_SIGNATURE + ihdr + before_idat + chunk(b"IDAT", data) + imaging.PNG_IEND


def test_valid_pngs_a_camera_never_sends_are_refused() -> None:
    """16-bit, palette, sub-byte grey and interlaced PNGs are valid, and refused as `unsupported_format`."""
    image = face_image()
    sixteen_bit = imaging.encode(image.astype(np.uint16) * 257, PNG)
    assert cv2.imdecode(np.frombuffer(sixteen_bit, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    palette = ihdr_png(16, 2, 8, 3, zlib.compress(bytes(34)), before_idat=chunk(b"PLTE", bytes(3)))
    one_bit = ihdr_png(16, 2, 1, 0, zlib.compress(bytes(6)))
    interlaced = ihdr_png(8, 8, 8, 0, zlib.compress(bytes(200)), interlace=1)
    for payload in (sixteen_bit, palette, one_bit, interlaced):
        assert cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED) is not None, "a decoder takes it"
        assert reason(payload) == "unsupported_format"


def test_jpegs_a_camera_never_sends_are_refused() -> None:
    payload = bytearray(jpeg_bytes())
    sof = payload.find(b"\xff\xc0")
    payload[sof + 1] = 0xC3  # lossless
    assert reason(bytes(payload)) == "unsupported_format"
    payload[sof + 1], payload[sof + 4] = 0xC0, 12  # 12-bit samples
    assert reason(bytes(payload)) == "unsupported_format"


def zeros_png(width: int, height: int, channels: int, last_filter: int = 0) -> bytes:
    """An 8-bit image of zeros (a PNG bomb's shape: ~1000:1) whose last row may carry a bad filter type."""
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    stride = 1 + width * channels
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(bytes(stride)) for _ in range(height - 1))
    data += comp.compress(bytes([last_filter]) + bytes(stride - 1)) + comp.flush()
    return ihdr_png(width, height, 8, colour, data)


@pytest.mark.parametrize("last_filter", [0, 7])
def test_a_png_at_a_raised_pixel_limit_is_checked_in_bounded_memory(last_filter: int) -> None:
    """4096x4096 RGBA of zeros (64 MiB of pixels in a ~65 KB payload): inflated a piece at a time, the check's own
    allocations stay within a few pieces (not 64 MiB), accepted when valid and refused for a bad filter in its very last row."""
    bomb = zeros_png(4096, 4096, 4, last_filter)
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        try:
            outcome = "stored" if as_png(bomb, PNG, max_pixels=4096 * 4096) is bomb else "copied"
        except ContractError as exc:
            outcome = exc.reason
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome == ("stored" if last_filter == 0 else "undecodable")
    assert peak < 8 * imaging.INFLATE_PIECE, f"checking a {len(bomb)}-byte PNG allocated {peak} bytes"


def test_only_the_chunks_an_image_needs_are_stored() -> None:
    """A 64x48 PNG carrying a 1 MiB tEXt chunk (and a profile, a suggested palette) is stored as its image alone."""
    plain = png_bytes()
    ihdr_end = 8 + 25
    extras = chunk(b"tEXt", b"note\x00" + bytes(1024 * 1024)) + chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(bytes(100)))
    extras += chunk(b"PLTE", bytes(3 * 4))
    stuffed = plain[:ihdr_end] + extras + plain[ihdr_end:]
    stored = as_png(stuffed, PNG)
    assert stored == plain
    decoded = cv2.imdecode(np.frombuffer(stored, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(decoded, face_image())


def test_image_data_far_larger_than_its_pixels_is_refused() -> None:
    """Empty deflate blocks pad a 64x48 image's data to 1 MiB: a valid stream, but not an image's worth of data."""
    image = face_image()
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(image.shape[0]))
    comp = zlib.compressobj(1)
    empty_stored_block = b"\x00\x00\x00\xff\xff"  # after a sync flush the stream is byte-aligned: blocks fit in
    data = comp.compress(raw) + comp.flush(zlib.Z_SYNC_FLUSH) + empty_stored_block * (1024 * 1024 // 5) + comp.flush()
    padded = ihdr_png(48, 64, 8, 2, data)
    assert zlib.decompress(data) == raw
    assert reason(padded) == "bloated"
    stored_blocks = ihdr_png(48, 64, 8, 2, zlib.compress(raw, 0))  # deflate's worst case is still an image
    assert as_png(stored_blocks) is stored_blocks

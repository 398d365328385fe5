"""Image files a user might hand `tinymatch match`, generated on the fly (nothing large is written).

`BAD_IMAGES`: {name: (make(folder) -> path, fragment the one-line error must contain)}.
`same_picture_in_other_encodings(folder)`: an 8-bit RGB picture and copies of it in encodings that
must read back as the same pixels (16-bit PNG and TIFF, 32-bit and float TIFF, 16-bit RGB PNG).
"""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(width: int, height: int, *, depth: int = 8, colour_type: int = 0, pixels: bytes = b"") -> bytes:
    """A PNG written by hand: any declared size (the header is all a bomb needs), any bit depth."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels))
            + chunk(b"IEND", b""))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _bomb(folder: Path) -> Path:
    """100,000 x 100,000 pixels declared (10 gigapixels); the compressed rows hold a few bytes."""
    return _write(folder / "bomb.png", png_bytes(100_000, 100_000, pixels=b"\0" * 1000))


def _over_budget(folder: Path) -> Path:
    """50 megapixels declared: under PIL's own bomb limits, over tinymatch's budget."""
    return _write(folder / "fifty_megapixels.png", png_bytes(10_000, 5_000, pixels=b"\0" * 1000))


def _fifo(folder: Path) -> Path:
    os.mkfifo(folder / "pipe.png")
    return folder / "pipe.png"


def _socket(folder: Path) -> Path:
    path = folder / "sock.png"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))  # the socket file stays after the object is gone
    server.close()
    return path


def _device(folder: Path) -> Path:
    os.symlink("/dev/zero", folder / "zero.png")
    return folder / "zero.png"


def _directory(folder: Path) -> Path:
    (folder / "folder.png").mkdir()
    return folder / "folder.png"


def _truncated(folder: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(buffer, "PNG")
    return _write(folder / "truncated.png", buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _truncated_jpeg(folder: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(buffer, "JPEG")
    return _write(folder / "truncated.jpg", buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _zero_width(folder: Path) -> Path:
    return _write(folder / "zero_width.png", png_bytes(0, 64))


def _empty(folder: Path) -> Path:
    return _write(folder / "empty.jpg", b"")


def _text(folder: Path) -> Path:
    return _write(folder / "notes.png", b"this is a text file with an image's name\n" * 20)


def _postscript(folder: Path) -> Path:
    """EPS content: Pillow would hand it to Ghostscript; tinymatch never decodes that format."""
    return _write(folder / "drawing.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n")


BAD_IMAGES = {
    "decompression_bomb": (_bomb, "over the budget"),
    "over_pixel_budget": (_over_budget, "over the budget"),
    "fifo": (_fifo, "FIFO"),
    "socket": (_socket, "socket"),
    "link_to_device": (_device, "character device"),
    "directory": (_directory, "folder"),
    "truncated_png": (_truncated, "cannot read image"),
    "truncated_jpeg": (_truncated_jpeg, "cannot read image"),
    "zero_width": (_zero_width, "cannot read image"),
    "empty_file": (_empty, "empty"),
    "text_named_png": (_text, "cannot read image"),
    "postscript_named_png": (_postscript, "cannot read image"),
}


def picture(seed: int = 0) -> np.ndarray:
    """A 64 x 64 8-bit grayscale picture with every level 0..255 and some structure."""
    rng = np.random.default_rng(seed)
    levels = np.arange(64 * 64) % 256
    return rng.permutation(levels).reshape(64, 64).astype(np.uint8)


def same_picture_in_other_encodings(folder: Path) -> tuple[Path, dict[str, Path]]:
    """(the 8-bit PNG, {encoding: a copy of it}) for a grayscale picture with every level."""
    gray = picture()
    original = folder / "eight_bit.png"
    Image.fromarray(gray, "L").save(original)
    wide = gray.astype(np.uint16) * 257  # 255 -> 65535: the same picture at 16 bits
    copies = {}
    Image.fromarray(wide).save(folder / "sixteen_bit.png")  # mode I;16
    copies["png_16_bit_gray"] = folder / "sixteen_bit.png"
    Image.fromarray(wide).save(folder / "sixteen_bit.tif")
    copies["tiff_16_bit_gray"] = folder / "sixteen_bit.tif"
    Image.fromarray(wide.astype(">u2")).save(folder / "sixteen_bit_big_endian.tif")  # mode I;16B
    copies["tiff_16_bit_big_endian"] = folder / "sixteen_bit_big_endian.tif"
    signed_32 = np.rint(gray.astype(np.float64) * ((2 ** 31 - 1) / 255)).astype(np.int32)
    Image.fromarray(signed_32).save(folder / "thirty_two_bit.tif")  # mode I, SampleFormat signed
    copies["tiff_32_bit_int"] = folder / "thirty_two_bit.tif"
    Image.fromarray(gray.astype(np.float32) / 255).save(folder / "float.tif")  # mode F, 0..1
    copies["tiff_float"] = folder / "float.tif"
    rgb48 = np.repeat(wide[..., None], 3, axis=-1).astype(">u2")
    rows = b"".join(b"\0" + row.tobytes() for row in rgb48)
    copies["png_16_bit_rgb"] = _write(folder / "sixteen_bit_rgb.png",
                                      png_bytes(64, 64, depth=16, colour_type=2, pixels=rows))
    return original, copies

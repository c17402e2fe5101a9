"""One rule for reading a frame file, shared by `data check`, the decoded cache and direct decoding.

- Only regular files are opened (a FIFO or device named as a frame would block or never end).
- Only the formats a tactile frame comes in are decoded (PNG, JPEG, BMP, TIFF): whatever a file is named, Pillow's
  other plugins (EPS through Ghostscript, ...) are never reached.
- Images whose decoded size (pixels × bytes per pixel of their mode) exceeds MAX_FRAME_BYTES are refused from the
  header, before decoding (a decompression bomb, or the wrong file).
- Modes: 8-bit RGB as is; L, P, RGBA, LA, 1, CMYK, YCbCr converted by Pillow; 16-bit grayscale (I;16*, and I
  holding 16-bit values) scaled to 8 bits by value/257 (Pillow's own convert would clip it to white);
  anything else (float F, 32-bit values beyond 16 bits) is refused with the mode named.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

FRAME_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
MAX_FRAME_BYTES = 64 * 2**20  # e.g. 4096 x 4096 RGB (48 MiB): far above any tactile sensor
MAX_FRAME_PIXELS = 8192 * 8192
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "RGB": 3, "YCbCr": 3, "I;16": 2, "I;16B": 2,
                    "I;16L": 2, "I;16N": 2}  # other modes (RGBA, CMYK, I, F, ...): 4
_PILLOW_CONVERTS = {"RGB", "L", "P", "RGBA", "LA", "PA", "1", "CMYK", "YCbCr", "RGBX", "RGBa", "La"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}


class FrameError(ValueError):
    """A frame file that cannot be used; the message says why (the caller adds the path)."""


def check_regular_file(path: Path) -> int:
    """-> size in bytes; raises FrameError for a missing, special or empty file (never opens it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FrameError("missing frame") from None
    except OSError as err:
        raise FrameError(f"cannot stat frame ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise FrameError("not a regular file (a FIFO, device or folder); frames must be PNG files")
    if st.st_size == 0:
        raise FrameError("zero-byte frame")
    return st.st_size


def to_rgb8(img: Image.Image) -> Image.Image:
    """Any supported mode -> 8-bit RGB; FrameError for the others."""
    if img.mode == "RGB":
        return img
    if img.mode in _PILLOW_CONVERTS:
        return img.convert("RGB")
    if img.mode in _SIXTEEN_BIT or img.mode == "I":
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise FrameError(f"mode {img.mode} with values outside 0..65535 is not supported; save 8- or 16-bit PNGs")
        # round(v / 257) in integers (65535 -> 255, the full 16-bit range onto 8 bits), 4 bytes per pixel at most
        gray = ((values.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), "RGB")
    raise FrameError(f"unsupported image mode {img.mode}; save the frames as 8- or 16-bit PNGs")


def open_frame(path: Path) -> tuple[Image.Image, tuple[str, int, int, str]]:
    """Open, bound-check and fully decode a frame. -> (8-bit RGB image, (format, width, height, mode) of the file)."""
    check_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FRAME_FORMATS) as img:
                width, height = img.size
                decoded = width * height * _BYTES_PER_PIXEL.get(img.mode, 4)
                if width * height > MAX_FRAME_PIXELS or decoded > MAX_FRAME_BYTES:
                    raise FrameError(f"image is {width}x{height} pixels of mode {img.mode} ({decoded / 2**20:.0f} MiB "
                                     f"decoded), above the limit of {MAX_FRAME_BYTES // 2**20} MiB "
                                     f"(a decompression bomb or a wrong file)")
                info = (img.format, width, height, img.mode)
                img.load()  # forces the full decode: truncated files raise here, not later in a batch
                return to_rgb8(img), info
    except FrameError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise FrameError(f"refused as a decompression bomb ({str(err)[:80]})") from None
    except UnidentifiedImageError:
        raise FrameError(f"not a decodable {', '.join(FRAME_FORMATS)} image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise FrameError(f"truncated or corrupt image ({str(err)[:80]})") from None


def decode_frame(path: Path, size: int | None) -> np.ndarray:
    """A frame file -> RGB uint8 [size, size, 3] (bilinear resize like the reference)."""
    rgb, _ = open_frame(path)
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)

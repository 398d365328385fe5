"""Fetch the official zip: resumable, checked, renamed into place only when complete.

What is checked, and what is never done:
- Only http:// and https:// URLs are fetched (no `file://`, `ftp://`, ...).
- The bytes received are compared with the server's `Content-Length`: a short transfer is an
  error that keeps `<dest>.part`, so the next call resumes it (HTTP Range).
- With an md5 (compared case-insensitively) the file is renamed into place only when it matches.
  Without one (`md5=None`, CLI `--md5 none`) nothing vouches for the content: the file must at
  least be a zip whose directory can be read (and, from the official URL, have the official size),
  and the caller must say "not verified".
- A file that may be good is never deleted: an existing `dest` that fails its check is left alone
  (the error says so); a finished transfer that fails its check is moved aside to
  `<dest>.rejected` (so the next call downloads afresh and nothing is lost).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from tinymatch.data.errors import DataError, DownloadError
from tinymatch.synthetic import LAYOUT_DIR

logger = logging.getLogger(__name__)

OFFICIAL_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
OFFICIAL_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
OFFICIAL_SIZE = 248_100_043
_MD5_PATTERN = re.compile(r"[0-9a-f]{32}")


def _md5(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def normalize_md5(md5: str | None) -> str | None:
    """`md5` in lower case without surrounding blanks; None stays None; anything else is an error."""
    if md5 is None:
        return None
    value = md5.strip().lower()
    if not _MD5_PATTERN.fullmatch(value):
        raise ValueError(f"md5={md5!r}: expected 32 hexadecimal digits (or none: do not check)")
    return value


def _check_url(url: str) -> None:
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ValueError(f"url={url!r}: only http:// and https:// URLs can be downloaded")


def _zip_problem(path: Path, url: str) -> str | None:
    """Why `path` is not a plausible dataset zip (None: it is). Reads only the zip's directory."""
    if url == OFFICIAL_URL and path.stat().st_size != OFFICIAL_SIZE:
        return f"{path.stat().st_size:,} bytes, but the official zip has {OFFICIAL_SIZE:,}"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f"not a zip file ({err})"
    if not any(name.rsplit("/", 1)[-1] == "wnids.txt" for name in names):
        return f"a zip without {LAYOUT_DIR}/wnids.txt, not Tiny ImageNet"
    return None


def _offline_hint(url: str, reason: Any) -> str:
    return (f"cannot download {url} ({reason}). Without network, copy the official "
            f"tiny-imagenet-200.zip (or its unpacked {LAYOUT_DIR}/ folder) to this machine and point "
            "tinymatch at it with --data PATH or TINYMATCH_DATA=PATH")


def _check_existing(dest: Path, md5: str | None, url: str) -> Path:
    """`dest` when it passes the check; otherwise an error that leaves it in place."""
    if md5 is not None:
        actual = _md5(dest)
        if actual != md5:
            raise DataError(f"{dest}: exists but its md5 is {actual}, not {md5}; move it away (or "
                            "delete it) and run again")
        logger.info("%s is already there and verified", dest)
        return dest
    problem = _zip_problem(dest, url)
    if problem:
        raise DataError(f"{dest}: exists but is {problem}; move it away (or delete it) and run again")
    logger.info("%s is already there (a readable zip; not verified: no checksum given)", dest)
    return dest


def _reject(part: Path, dest: Path, message: str) -> DataError:
    rejected = dest.with_name(dest.name + ".rejected")
    os.replace(part, rejected)
    return DataError(f"{part}: {message}; kept as {rejected} (delete it once checked), "
                     "run again to download afresh")


def _transfer(url: str, part: Path, *, timeout: float, progress: bool, label: str) -> None:
    """Append the rest of `url` to `part`; raises DownloadError, keeping `part`, if cut short."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # 416: the .part already holds every byte
            total = (err.headers.get("Content-Range") or "").rpartition("/")[2]
            if total.isdigit() and int(total) != offset:
                raise DownloadError(f"{url}: the server refuses to resume {part} ({offset:,} bytes "
                                    f"of {int(total):,}); delete it and run again") from None
            return
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise DownloadError(_offline_hint(url, getattr(err, "reason", err))) from None

    with response:
        if offset and response.status != 206:  # the server ignored Range: start again
            logger.info("server does not resume downloads; starting %s again", part)
            offset = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        try:
            with open(part, "ab" if offset else "wb") as handle, \
                    tqdm(total=None if expected is None else offset + expected, initial=offset, unit="B",
                         unit_scale=True, unit_divisor=1024, desc=label, disable=not progress) as bar:
                while block := response.read(1 << 20):
                    handle.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (OSError, socket.timeout, http.client.HTTPException) as err:
            raise DownloadError(f"download of {url} interrupted ({type(err).__name__}: {err}); run "
                                f"again to resume from {part}") from None
    if expected is not None and received != expected:
        raise DownloadError(f"download of {url} truncated: {received:,} of {expected:,} bytes "
                            f"received; run again to resume from {part}")


def download(dest: str | os.PathLike, *, url: str = OFFICIAL_URL, md5: str | None = OFFICIAL_MD5,
             progress: bool = True, timeout: float = 10.0) -> Path:
    """Fetch the dataset zip to `dest`: resumable, checked, renamed into place at the end.

    Bytes arrive in `dest + '.part'`; a second call after an interruption asks the server for the
    rest (HTTP Range) and appends. A transfer shorter than the server's Content-Length raises
    `DownloadError` and keeps the `.part`. The finished file must have the md5 `md5` (any case);
    with `md5=None` nothing is verified: it must only be a readable zip holding `wnids.txt` (and
    from the official URL have the official size), and the caller must report it as NOT verified.
    An existing `dest` that passes the same check is returned without downloading; one that fails
    is left untouched and named in the error. `timeout` (s) bounds connecting and every read, so
    no network fails fast. Only http(s) URLs.
    """
    _check_url(url)
    md5 = normalize_md5(md5)
    dest = Path(dest).expanduser()
    if dest.is_file():
        return _check_existing(dest, md5, url)
    if dest.exists():
        raise DataError(f"{dest}: exists and is not a file; choose another destination")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if part.exists() and not part.is_file():  # a FIFO there would block the write
        raise DataError(f"{part}: exists and is not a file; move it away and run again")
    _transfer(url, part, timeout=timeout, progress=progress, label=dest.name)
    if md5 is not None:
        actual = _md5(part)
        if actual != md5:
            raise _reject(part, dest, f"md5 checksum mismatch (got {actual}, expected {md5})")
    else:
        problem = _zip_problem(part, url)
        if problem:
            raise _reject(part, dest, f"downloaded, but it is {problem}")
    os.replace(part, dest)
    return dest


__all__ = ["download", "normalize_md5", "OFFICIAL_URL", "OFFICIAL_MD5", "OFFICIAL_SIZE"]

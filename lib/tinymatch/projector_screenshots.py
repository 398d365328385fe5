"""Screenshots of TensorBoard's Embedding Projector showing an export of `tinymatch.projector`.

`capture(projector_dir, out_dir)` shows the reader what `tensorboard --logdir RUN_DIR/tensorboard`
would show in its PROJECTOR tab, without anyone opening a browser:

1. it starts TensorBoard (`python -m tensorboard.main`) on the export folder, on a free port of
   127.0.0.1, and waits until the projector plugin lists the export;
2. it opens `http://127.0.0.1:PORT/#projector` in headless Chromium, WebGL rendered in software
   (SwiftShader through ANGLE: `WEBGL_FLAGS`), and drives the page over the DevTools protocol
   (a websocket; the small client below needs only the standard library);
3. in the projector's Polymer elements (two same-origin iframes down, behind shadow roots) it waits
   for the data and the sprite thumbnails, colours the points by class (the sprites are tinted with
   the class colour), shows the 2-D PCA view, then the 2-D t-SNE view after `tsne_iterations`
   iterations (then pauses t-SNE), and saves one PNG per view: `projector_pca.png`,
   `projector_tsne.png` (each written atomically).

Two things the projector does by itself are taken care of: it offers no text column of more than 50
distinct values for colouring (then the points are coloured by "class_id", categorically), and its
t-SNE takes 1 - dot product for the neighbours' distance, right for unit vectors only (our model's
embeddings are unit length; other vectors get "Spherize data").

TensorBoard and Chromium are always stopped, also on errors and timeouts. Every failure, a missing
export, TensorBoard or Chromium included, is a `ProjectorScreenshotError` naming what is missing.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import math
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tinymatch.io_utils import atomic_path

VIEWS = ("pca", "tsne")
SCREENSHOT_NAMES = {"pca": "projector_pca.png", "tsne": "projector_tsne.png"}
CONFIG_FILENAME = "projector_config.pbtxt"  # = tinymatch.projector.CONFIG_FILENAME (no import: no TF)
# Software WebGL in headless Chromium: ANGLE on SwiftShader. Recent Chromium refuses the SwiftShader
# fallback for WebGL unless it is asked for explicitly (--enable-unsafe-swiftshader); the old
# --use-gl=swiftshader leaves the page without WebGL in Chromium >= 1xx, so it is not used.
WEBGL_FLAGS = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader")
DEFAULT_WINDOW_SIZE = (1400, 900)
DEFAULT_TSNE_ITERATIONS = 300
# 10x the projector's default of 10: t-SNE settles within a few hundred iterations (each one is a
# frame drawn in software, so fewer iterations are less CPU time).
DEFAULT_TSNE_LEARNING_RATE = 100
DEFAULT_TIMEOUT = 300.0
POLL_SECONDS = 0.25


class ProjectorScreenshotError(RuntimeError):
    """The projector screenshots could not be taken; the message says what is missing or failed."""


def capture(projector_dir, out_dir, *, views=VIEWS, timeout: float = DEFAULT_TIMEOUT,
            color_by: str | None = None, tsne_iterations: int = DEFAULT_TSNE_ITERATIONS,
            tsne_learning_rate: float | None = DEFAULT_TSNE_LEARNING_RATE, tsne_perplexity: int | None = None,
            spherize: bool | None = None, window_size=DEFAULT_WINDOW_SIZE, three_d: bool = False,
            chromium: str | None = None) -> list[Path]:
    """Screenshot TensorBoard's Embedding Projector on the export in `projector_dir`.

    Args:
        projector_dir: an export of `tinymatch.projector.export_projector` (`RunDir.projector`):
            TensorBoard is started with it as its log directory.
        out_dir: where the PNGs go (`projector_pca.png`, `projector_tsne.png`); created if needed.
        views: which projections to capture, in order: "pca" and/or "tsne".
        timeout: seconds for the whole capture (TensorBoard start, page load, t-SNE iterations).
        color_by: metadata column the points are coloured by. None: "class_name" where the
            projector offers it (up to 50 classes), else "class_id" with "Use categorical coloring"
            ticked (the projector offers no text column of more than 50 values for colouring).
        tsne_iterations: t-SNE iterations to run before its screenshot.
        tsne_learning_rate: t-SNE learning rate, set as on the projector's slider (a power of ten);
            None keeps the projector's default (10), which needs many more iterations.
        tsne_perplexity: t-SNE perplexity; None keeps the projector's choice for the data size.
        spherize: the projector's "Spherize data" (centre, then scale each vector to unit length).
            None keeps the projector's choice (on from 50 dimensions) unless the vectors are not unit
            length: its t-SNE finds neighbours by 1 - dot product, which only unit vectors make a
            cosine distance, so other vectors are spherized (else t-SNE scatters every class).
        window_size: (width, height) of the browser viewport = the size of each PNG.
        three_d: 3-D projections (the projector's default) instead of the flatter 2-D ones.
        chromium: a Chromium/Chrome executable; default `tinymatch.report.render.find_chromium()`.

    Returns:
        The paths of the PNGs written, in the order of `views`.

    Raises:
        ProjectorScreenshotError: no export, no TensorBoard, no Chromium, no WebGL, or the
            projector did not show the export within `timeout` (the message says which).
        ValueError: an unknown view or a bad size.
    """
    views = tuple(views)
    unknown = [view for view in views if view not in SCREENSHOT_NAMES]
    if unknown or not views:
        raise ValueError(f"views: expected some of {VIEWS}, got {views}")
    width, height = (int(side) for side in window_size)
    if width < 200 or height < 200:
        raise ValueError(f"window_size: at least 200 x 200 pixels, got {window_size}")
    projector_dir = check_export(projector_dir)
    check_tensorboard()
    chromium = _find_chromium(chromium)
    out_dir = Path(out_dir)
    deadline = time.monotonic() + timeout
    with _TensorBoard(projector_dir, deadline) as board:
        with _Chromium(chromium, (width, height), deadline) as browser:
            page = browser.page
            page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
            _check_webgl(page, chromium)
            page.call("Page.navigate", url=f"{board.url}/#projector")
            state = _wait_until_loaded(page, deadline, board)
            _evaluate(page, _js(_SPHERIZE.replace("SPHERIZE", json.dumps(spherize))))
            _color_points(page, color_by, state["colorOptions"])
            paths = []
            for view in views:
                if view == "pca":
                    _show_pca(page, three_d, deadline)
                else:
                    _show_tsne(page, three_d, tsne_iterations, tsne_learning_rate, tsne_perplexity, deadline)
                paths.append(_screenshot(page, out_dir / SCREENSHOT_NAMES[view]))
    return paths


def check_export(projector_dir) -> Path:
    """`projector_dir` as a Path if it holds a projector export, else a ProjectorScreenshotError."""
    projector_dir = Path(projector_dir)
    if not projector_dir.is_dir():
        raise ProjectorScreenshotError(
            f"no projector export at {projector_dir}: the folder does not exist (the notebooks write it "
            f"with tinymatch.report.export_projection into RUN_DIR/tensorboard/projector)")
    config = projector_dir / CONFIG_FILENAME
    if not config.is_file():
        raise ProjectorScreenshotError(f"no projector export in {projector_dir}: {CONFIG_FILENAME} is missing")
    text = config.read_text(errors="replace")
    for field in ("tensor_path", "metadata_path"):
        for line in text.splitlines():
            if line.strip().startswith(field + ":"):
                name = line.split(":", 1)[1].strip().strip('"')
                if not (projector_dir / name).is_file():
                    raise ProjectorScreenshotError(
                        f"incomplete projector export in {projector_dir}: {name} ({field}) is missing")
    return projector_dir


def check_tensorboard() -> None:
    """A ProjectorScreenshotError unless this interpreter can run `python -m tensorboard.main`."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ProjectorScreenshotError(
            f"the projector screenshots need TensorBoard, which {sys.executable} cannot import: "
            f"pip install 'tinymatch[report]' (or tensorboard)")


def _find_chromium(chromium: str | None) -> str:
    import shutil

    if chromium:
        found = shutil.which(chromium)
        if not found:
            raise ProjectorScreenshotError(f"the projector screenshots need Chromium, but {chromium!r} is "
                                           f"not an executable")
        return found
    try:
        from tinymatch.report.render import ChromiumNotFoundError, find_chromium
    except ImportError as error:
        raise ProjectorScreenshotError(f"the projector screenshots need tinymatch.report (pip install "
                                       f"'tinymatch[report]'): {error}") from None
    try:
        return find_chromium()
    except ChromiumNotFoundError as error:
        raise ProjectorScreenshotError(f"the projector screenshots need headless Chromium: {error}") from None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _remaining(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ProjectorScreenshotError(f"timed out: {what}")
    return left


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _tail(path: Path, lines: int = 8) -> str:
    """The last lines of a log, without Chromium's harmless complaints about a missing D-Bus."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line for line in text.strip().splitlines() if "dbus" not in line.lower()]
    return "\n".join(kept[-lines:])


def tensorboard_command(logdir: Path, port: int) -> list[str]:
    """TensorBoard on 127.0.0.1 only; the Python data loader (no Rust data server subprocess)."""
    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
            "--host", "127.0.0.1", "--load_fast", "false"]


class _TensorBoard:
    """TensorBoard serving `logdir` while the `with` block runs; stopped on leaving it, errors included."""

    def __init__(self, logdir: Path, deadline: float):
        self.logdir, self.deadline = logdir, deadline
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def __enter__(self):
        self._logs = tempfile.TemporaryDirectory(prefix="tinymatch-tensorboard-", ignore_cleanup_errors=True)
        self.log = Path(self._logs.name) / "tensorboard.log"
        try:
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(tensorboard_command(self.logdir, self.port), stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            self._wait_for_projector()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.process is not None:
            _stop(self.process)
        self._logs.cleanup()
        return False

    def failure(self) -> str | None:
        """Why TensorBoard is gone, if it exited."""
        if self.process is not None and self.process.poll() is not None:
            return f"TensorBoard exited with status {self.process.returncode}: {_tail(self.log)}"
        return None

    def _wait_for_projector(self) -> None:
        runs_url = f"{self.url}/data/plugin/projector/runs"
        answer, answered_at = None, None
        while True:
            failure = self.failure()
            if failure:
                raise ProjectorScreenshotError(failure)
            try:
                with urllib.request.urlopen(runs_url, timeout=5) as response:
                    answer = json.loads(response.read() or b"null")
                if answer:
                    return
                answered_at = answered_at or time.monotonic()
            except (urllib.error.URLError, OSError, ValueError):
                pass
            # Once TensorBoard answers, its projector plugin lists the export within seconds, or never.
            if time.monotonic() > min(self.deadline, (answered_at or math.inf) + 30):
                if answer is not None:
                    raise ProjectorScreenshotError(
                        f"TensorBoard ({self.url}) finds no projector export in {self.logdir} "
                        f"(its projector plugin lists no run): {_tail(self.log)}")
                raise ProjectorScreenshotError(f"timed out waiting for TensorBoard to answer at {runs_url}: "
                                               f"{_tail(self.log)}")
            time.sleep(POLL_SECONDS)


class _Chromium:
    """Headless Chromium with the DevTools protocol on a free port, and a client for its one page."""

    def __init__(self, executable: str, window_size, deadline: float):
        self.executable, self.window_size, self.deadline = executable, window_size, deadline
        self.process = None
        self.page = None

    def __enter__(self):
        # Chromium's helper processes may still write to the profile as it exits: ignore what remains.
        self._profile = tempfile.TemporaryDirectory(prefix="tinymatch-chromium-", ignore_cleanup_errors=True)
        profile = Path(self._profile.name)
        self.log = profile / "chromium.log"
        width, height = self.window_size
        command = [self.executable, "--headless", "--no-sandbox", *WEBGL_FLAGS, "--no-first-run",
                   "--disable-quic", "--disable-background-networking", "--disable-component-update",
                   "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
                   "--mute-audio", f"--window-size={width},{height}", f"--user-data-dir={profile}",
                   "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"]
        try:
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
            port = self._devtools_port(profile / "DevToolsActivePort")
            self.page = _DevTools(self._page_websocket(port), self.deadline)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.page is not None:
            self.page.close()
        if self.process is not None:
            _stop(self.process)
        self._profile.cleanup()
        return False

    def _failure(self) -> str:
        return f"Chromium ({self.executable}) exited with status {self.process.returncode}: {_tail(self.log)}"

    def _devtools_port(self, port_file: Path) -> int:
        # Chromium writes the port it chose (first line) and the browser's websocket path there.
        while True:
            if self.process.poll() is not None:
                raise ProjectorScreenshotError(self._failure())
            try:
                lines = port_file.read_text().splitlines()
                if len(lines) >= 2:
                    return int(lines[0])
            except (OSError, ValueError):
                pass
            _remaining(self.deadline, f"Chromium did not open its DevTools port: {_tail(self.log)}")
            time.sleep(0.1)

    def _page_websocket(self, port: int) -> str:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                    targets = json.loads(response.read())
                pages = [target for target in targets if target.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if self.process.poll() is not None:
                raise ProjectorScreenshotError(self._failure())
            _remaining(self.deadline, "Chromium's DevTools lists no page")
            time.sleep(0.1)


class _DevTools:
    """A minimal DevTools protocol client: one websocket (RFC 6455, text frames), calls by id."""

    def __init__(self, url: str, deadline: float):
        if not url.startswith("ws://"):
            raise ProjectorScreenshotError(f"unexpected DevTools address {url!r}")
        self.deadline = deadline
        host_port, _, path = url[len("ws://"):].partition("/")
        host, _, port = host_port.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=_remaining(deadline, "DevTools"))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ProjectorScreenshotError(
                f"Chromium refused the DevTools websocket: {status.decode(errors='replace')}")
        self.next_id = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def call(self, method: str, **params):
        """Send one command; return its result (events that arrive meanwhile are dropped)."""
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}).encode())
        while True:
            message = json.loads(self._receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise _DevToolsError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})

    def _recv(self) -> bytes:
        self.sock.settimeout(max(0.1, _remaining(self.deadline, "waiting for Chromium's DevTools")))
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            raise ProjectorScreenshotError("timed out waiting for Chromium's DevTools") from None
        if not chunk:
            raise ProjectorScreenshotError("Chromium closed the DevTools connection")
        return chunk

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += self._recv()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _send(self, payload: bytes, opcode: int = 0x1) -> None:
        size = len(payload)
        if size < 126:
            header = struct.pack(">BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, size)
        mask = os.urandom(4)  # a client masks every frame
        keystream = (mask * (size // 4 + 1))[:size]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(size, "big")
        self.sock.settimeout(max(0.1, _remaining(self.deadline, "sending to Chromium's DevTools")))
        self.sock.sendall(header + mask + masked)

    def _receive(self) -> str:
        fragments = []
        while True:
            first, second = self._read(2)
            opcode, size = first & 0x0F, second & 0x7F
            if size == 126:
                size = struct.unpack(">H", self._read(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else None
            data = self._read(size)
            if mask:
                data = bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))
            if opcode == 0x8:
                raise ProjectorScreenshotError("Chromium closed the DevTools connection")
            if opcode == 0x9:
                self._send(data, opcode=0xA)
                continue
            if opcode == 0xA:
                continue
            fragments.append(data)
            if first & 0x80:
                return b"".join(fragments).decode("utf-8")


class _DevToolsError(ProjectorScreenshotError):
    """A DevTools command answered with an error (e.g. while the page navigates)."""


class _PageError(ProjectorScreenshotError):
    """The JavaScript evaluated in the page threw."""


# JavaScript run in the top page. `vz` is the <vz-projector> element: TensorBoard shows the plugin
# in an iframe that holds the projector's own iframe, and the Polymer elements nest shadow roots, so
# the search walks same-origin iframes and shadow roots. `dp`, `pp`: its data and projections panels.
_PRELUDE = """
const findDeep = (root, tag) => {
  for (const el of root.querySelectorAll('*')) {
    if (el.tagName === tag) return el;
    let inner = null;
    if (el.shadowRoot) inner = findDeep(el.shadowRoot, tag);
    if (!inner && el.tagName === 'IFRAME') {
      let doc = null;
      try { doc = el.contentDocument; } catch (e) {}
      if (doc) inner = findDeep(doc, tag);
    }
    if (inner) return inner;
  }
  return null;
};
const vz = findDeep(document, 'VZ-PROJECTOR');
const dp = vz && vz.dataPanel, pp = vz && vz.projectionsPanel;
const win = vz ? vz.ownerDocument.defaultView : window;
const frames = (n) => new Promise(done => {
  const step = () => (n-- <= 0 ? done() : win.requestAnimationFrame(step));
  step();
});
"""

_LOAD_STATE = """
if (!vz) return {ready: false, detail: 'no <vz-projector> element yet (TensorBoard page loading)'};
const dialog = vz.$ && vz.$['notify-msgs'];
const message = dialog ? dialog.innerText.trim() : '';
if (!vz.dataSet || !dp || !pp) return {ready: false, detail: 'the projector has no data set yet', message};
const info = vz.dataSet.spriteAndMetadataInfo || {};
const sprite = info.spriteImage;
const options = (dp.colorOptions || []).filter(o => !o.isSeparator).map(o => o.name);
return {ready: options.length > 0 && (!sprite || (sprite.complete && sprite.naturalWidth > 0)) && !!vz.projection,
        detail: 'points ' + vz.dataSet.points.length + ', sprite ' + (sprite ? sprite.complete : 'none'),
        points: vz.dataSet.points.length, colorOptions: options, sprite: !!sprite, message};
"""

# "Spherize data" as its checkbox does it (the panel's property drives the box, the projector's
# setter re-derives the data set); `SPHERIZE` is replaced by true, false or null (= automatic).
_SPHERIZE = """
const unit = vz.originalDataSet.points.every(p => Math.abs(Math.hypot(...p.vector) - 1) < 1e-3);
const wanted = SPHERIZE === null ? (!!vz.normalizeData || !unit) : SPHERIZE;
if (wanted !== !!vz.normalizeData) { dp.normalizeData = wanted; vz.setNormalizeData(wanted); await frames(2); }
return {unit, spherized: wanted};
"""


def _js(body: str) -> str:
    return "(async () => {" + _PRELUDE + body + "})()"


def _evaluate(page: _DevTools, expression: str):
    result = page.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
    if "exceptionDetails" in result:
        details = result["exceptionDetails"]
        text = (details.get("exception") or {}).get("description") or details.get("text")
        raise _PageError(f"the projector page raised: {text}")
    return result.get("result", {}).get("value")


def _check_webgl(page: _DevTools, chromium: str) -> None:
    renderer = _evaluate(page, """(() => {
        const gl = document.createElement('canvas').getContext('webgl');
        if (!gl) return null;
        const info = gl.getExtension('WEBGL_debug_renderer_info');
        return info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : 'WebGL';
    })()""")
    if not renderer:
        raise ProjectorScreenshotError(f"headless Chromium ({chromium}) has no WebGL with {' '.join(WEBGL_FLAGS)}: "
                                       f"the projector cannot draw")


def _wait_until_loaded(page: _DevTools, deadline: float, board: _TensorBoard) -> dict:
    state = {"detail": "page not loaded"}
    while True:
        try:
            state = _evaluate(page, _js(_LOAD_STATE)) or state
        except (_DevToolsError, _PageError) as error:  # e.g. the page is between documents
            state = {"detail": str(error)}
        if state.get("ready"):
            return state
        failure = board.failure()
        if failure:
            raise ProjectorScreenshotError(failure)
        if time.monotonic() > deadline:
            message = state.get("message")
            raise ProjectorScreenshotError(
                f"timed out waiting for the projector at {board.url}/#projector to show {board.logdir}: "
                f"{state.get('detail')}" + (f"; the projector says: {message}" if message else ""))
        time.sleep(POLL_SECONDS)


def _color_points(page: _DevTools, color_by: str | None, offered: list) -> None:
    """Colour by `color_by`; by default by class name, else by class id in categorical colours."""
    force = False
    if color_by is None:
        color_by, force = ("class_name", False) if "class_name" in offered else ("class_id", True)
    if color_by not in offered:
        raise ProjectorScreenshotError(f"the projector offers no column {color_by!r} to colour by; it offers "
                                       f"{[name for name in offered if name != 'No color map']}")
    _evaluate(page, _js(f"""if ({json.dumps(force)}) {{ dp.setForceCategoricalColoring(true); await frames(1); }}
        dp.selectedColorOptionName = {json.dumps(color_by)}; await frames(2);
        return true;"""))


def _projection(page: _DevTools) -> dict:
    return _evaluate(page, _js("""await frames(2);
        return {type: vz.projection && vz.projection.projectionType,
                dims: vz.projection && vz.projection.dimensionality,
                iteration: parseInt(pp.iterationLabelTsne.innerText || '0', 10) || 0,
                paused: pp.pauseTsneButton.innerText.trim()};"""))


def _show_pca(page: _DevTools, three_d: bool, deadline: float) -> None:
    _evaluate(page, _js(f"pp.pcaIs3d = {json.dumps(bool(three_d))}; await frames(2); pp.showTab('pca'); return true;"))
    _wait_for_projection(page, "pca", 3 if three_d else 2, deadline)


def _show_tsne(page: _DevTools, three_d: bool, iterations: int, learning_rate, perplexity,
               deadline: float) -> None:
    # The settings first, on their own: changing them re-projects the current view. They go through
    # the panel's sliders, so its labels show the values used.
    settings = [f"pp.tSNEis3d = {json.dumps(bool(three_d))};"]
    if learning_rate is not None:
        settings.append(f"pp.learningRateInput.value = {math.log10(float(learning_rate))!r}; "
                        f"pp.updateTSNELearningRateFromUIChange();")
    if perplexity is not None:
        settings.append(f"pp.perplexitySlider.value = {int(perplexity)}; pp.updateTSNEPerplexityFromSliderChange();")
    _evaluate(page, _js(" ".join(settings) + " await frames(2); return true;"))
    _evaluate(page, _js("pp.showTab('tsne'); return true;"))
    state = {}
    while True:
        state = _projection(page)
        if state["iteration"] >= iterations:
            break
        _remaining(deadline, f"t-SNE reached iteration {state['iteration']} of {iterations}")
        time.sleep(POLL_SECONDS * 2)
    # Pause (a still picture, and no more CPU), then show the t-SNE tab again: with a t-SNE result at
    # hand that only sets the projection, which also fits the camera to the points.
    _evaluate(page, _js("""if (pp.pauseTsneButton.innerText.trim() === 'Pause') pp.pauseTsneButton.click();
        await frames(2); pp.showTab('tsne'); return true;"""))
    _wait_for_projection(page, "tsne", 3 if three_d else 2, deadline)


def _wait_for_projection(page: _DevTools, kind: str, dims: int, deadline: float) -> None:
    while True:
        state = _projection(page)
        if state["type"] == kind and state["dims"] == dims:
            _evaluate(page, _js("await frames(3); return true;"))
            return
        _remaining(deadline, f"the projector shows the {state['type']} projection in {state['dims']}-D, "
                             f"not {kind} in {dims}-D")
        time.sleep(POLL_SECONDS)


def _screenshot(page: _DevTools, path: Path) -> Path:
    data = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinymatch.projector_screenshots",
                                     description="Screenshot TensorBoard's Embedding Projector on an export.")
    parser.add_argument("projector_dir", help="the export, e.g. RUN_DIR/tensorboard/projector")
    parser.add_argument("out_dir", help="where projector_pca.png and projector_tsne.png go")
    parser.add_argument("--views", nargs="+", default=list(VIEWS), choices=list(VIEWS))
    parser.add_argument("--tsne-iterations", type=int, default=DEFAULT_TSNE_ITERATIONS)
    parser.add_argument("--tsne-learning-rate", type=float, default=DEFAULT_TSNE_LEARNING_RATE)
    parser.add_argument("--tsne-perplexity", type=int, default=None)
    parser.add_argument("--spherize", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("--3d", dest="three_d", action="store_true", help="3-D projections")
    args = parser.parse_args(argv)
    try:
        started = time.monotonic()
        paths = capture(args.projector_dir, args.out_dir, views=args.views, timeout=args.timeout,
                        tsne_iterations=args.tsne_iterations, tsne_learning_rate=args.tsne_learning_rate,
                        tsne_perplexity=args.tsne_perplexity, three_d=args.three_d,
                        spherize={"auto": None, "on": True, "off": False}[args.spherize])
    except ProjectorScreenshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    print(f"{time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


__all__ = ["capture", "check_export", "check_tensorboard", "tensorboard_command", "ProjectorScreenshotError",
           "VIEWS", "SCREENSHOT_NAMES", "WEBGL_FLAGS", "main"]


if __name__ == "__main__":
    sys.exit(main())


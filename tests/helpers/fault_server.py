"""A loopback HTTP server of generated images with faults, for tests and benchmarks.

The first path segment picks the behaviour; the rest names the image (same name, same image):
  /img/N     a JPEG                     /png/N     a PNG with transparency
  /404/N     404                        /500/N     500 twice, then the image
  /429/N     429 with Retry-After: 1 once, then the image
  /trunc/N   a JPEG cut in half (decode error)   /cut/N  fewer bytes than Content-Length
  /html/N    a text/html page           /slow/N    waits 3 s before answering
  /redirect/N  302 to /img/N            /loop/N    a redirect loop
  /big/N     Content-Length of 1 GiB    /bomb/N    a tiny PNG claiming 30000x30000 pixels
  /dead/N    always 503                 /403/N     403 (a host that refuses everything)
  /file/N    bytes registered in ``files[N]``, honouring Range (206); names in ``drop_first``
             are cut off half-way on their first request (to test resumed downloads); names in
             ``trickle`` come 16 KiB at a time, that many seconds apart (a slow download). Each
             version (new bytes) has its own strong ETag and a later Last-Modified, honoured in
             If-None-Match / If-Modified-Since (304) and If-Range (a stale one: the whole new
             file, 200); names in ``no_validators`` send neither
"""

from __future__ import annotations

import hashlib
import io
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

KINDS = (
    "img",
    "png",
    "404",
    "500",
    "429",
    "trunc",
    "cut",
    "html",
    "slow",
    "redirect",
    "loop",
    "big",
    "bomb",
    "dead",
    "403",
    "file",
)


def make_image(name: str, size: tuple[int, int] = (384, 512), fmt: str = "JPEG") -> bytes:
    """A smooth, distinct image for ``name``: seeded noise, upscaled."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    small = np.random.default_rng(seed).integers(0, 256, (6, 6, 4 if fmt == "PNG" else 3))
    img = Image.fromarray(small.astype(np.uint8)).resize(size, Image.BICUBIC)
    out = io.BytesIO()
    img.save(out, format=fmt, quality=90)
    return out.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header claiming a huge size, with almost no data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up (timeouts, size limits) are expected here


class FaultServer:
    """Start with ``with FaultServer() as srv: srv.url("img", "a1")``."""

    def __init__(self, slow_seconds: float = 3.0, port: int = 0) -> None:
        self.slow_seconds = slow_seconds
        self.requests: Counter[str] = Counter()  # path -> requests received
        self.served_ok: Counter[str] = Counter()  # path -> 200 replies sent
        self._hits: Counter[str] = Counter()
        self._images: dict[tuple[str, str], bytes] = {}
        self.files: dict[str, bytes] = {}
        self.drop_first: set[str] = set()
        self.no_validators: set[str] = set()
        self._file_versions: dict[str, tuple[str, str]] = {}  # name -> (ETag, Last-Modified)
        self.trickle: dict[str, float] = {}
        self.range_requests: list[str] = []
        self.inflight = 0
        self.max_inflight = 0
        self._lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, kind: str, name: str) -> str:
        return f"{self.base}/{kind}/{name}"

    def image(self, name: str, fmt: str = "JPEG") -> bytes:
        with self._lock:
            key = (name, fmt)
            if key not in self._images:
                self._images[key] = make_image(name, fmt=fmt)
            return self._images[key]

    def file_validators(self, name: str, body: bytes) -> dict[str, str]:
        """The ETag and Last-Modified of the current version of file ``name``."""
        if name in self.no_validators:
            return {}
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        with self._lock:
            known = self._file_versions.get(name)
            if known is None or known[0] != etag:
                when = time.time() + len(self._file_versions) + (10 if known else 0)
                stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(when))
                self._file_versions[name] = known = (etag, stamp)
        return {"ETag": known[0], "Last-Modified": known[1]}

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _hit(self, path: str) -> int:
        with self._lock:
            self.requests[path] += 1
            return self.requests[path]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stalls

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                _, kind, name = ([*self.path.split("/", 2), "", ""])[:3]
                n = server._hit(self.path)
                route = getattr(self, f"_r_{kind}", None)
                if kind not in KINDS or route is None:
                    return self._send(404, b"unknown route", "text/plain")
                with server._lock:
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    route(name, n)
                finally:
                    with server._lock:
                        server.inflight -= 1

            def _send(
                self,
                code: int,
                body: bytes,
                ctype: str,
                headers: dict | None = None,
                length: int | None = None,
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    return
                if code == 200:
                    with server._lock:
                        server.served_ok[self.path] += 1

            def _r_img(self, name: str, n: int) -> None:
                self._send(200, server.image(name), "image/jpeg")

            def _r_png(self, name: str, n: int) -> None:
                self._send(200, server.image(name, "PNG"), "image/png")

            def _r_404(self, name: str, n: int) -> None:
                self._send(404, b"not found", "text/plain")

            def _r_500(self, name: str, n: int) -> None:
                if n <= 2:
                    return self._send(500, b"oops", "text/plain")
                self._r_img(name, n)

            def _r_429(self, name: str, n: int) -> None:
                if n <= 1:
                    return self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
                self._r_img(name, n)

            def _r_dead(self, name: str, n: int) -> None:
                self._send(503, b"unavailable", "text/plain")

            def _r_403(self, name: str, n: int) -> None:
                self._send(403, b"forbidden", "text/plain")

            def _r_trunc(self, name: str, n: int) -> None:
                body = server.image(name)
                self._send(200, body[: len(body) // 2], "image/jpeg")

            def _r_cut(self, name: str, n: int) -> None:
                body = server.image(name)
                self._send(200, body[:100], "image/jpeg", length=len(body))
                self.close_connection = True

            def _r_html(self, name: str, n: int) -> None:
                self._send(200, b"<html><body>gone</body></html>", "text/html")

            def _r_slow(self, name: str, n: int) -> None:
                time.sleep(server.slow_seconds)
                self._r_img(name, n)

            def _r_redirect(self, name: str, n: int) -> None:
                self._send(302, b"", "text/plain", {"Location": f"/img/{name}"})

            def _r_loop(self, name: str, n: int) -> None:
                self._send(302, b"", "text/plain", {"Location": f"/loop/{name}"})

            def _r_big(self, name: str, n: int) -> None:
                self._send(200, b"", "image/jpeg", length=1 << 30)
                self.close_connection = True

            def _r_file(self, name: str, n: int) -> None:
                body = server.files.get(name)
                if body is None:
                    return self._send(404, b"no such file", "text/plain")
                tags = server.file_validators(name, body)
                if self._not_modified(tags):
                    return self._send(304, b"", "text/csv", tags, length=0)
                start = 0
                if rng := self.headers.get("Range"):
                    server.range_requests.append(rng)
                    if_range = self.headers.get("If-Range")
                    if if_range is None or if_range in tags.values():
                        start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(body) and start:
                    return self._send(
                        416, b"", "text/plain", {"Content-Range": f"bytes */{len(body)}"}
                    )
                code = 206 if start else 200
                rest = body[start:]
                headers = dict(tags)
                if start:
                    headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                if name in server.drop_first and n == 1:
                    self._send(code, rest[: len(rest) // 2], "text/csv", headers, length=len(rest))
                    self.close_connection = True
                    return
                if name in server.trickle:
                    return self._trickle(code, rest, headers, server.trickle[name])
                self._send(code, rest, "text/csv", headers)

            def _not_modified(self, tags: dict[str, str]) -> bool:
                if (match := self.headers.get("If-None-Match")) is not None:
                    return match == tags.get("ETag")
                since = self.headers.get("If-Modified-Since")
                return since is not None and since == tags.get("Last-Modified")

            def _trickle(self, code: int, body: bytes, headers: dict, pause: float) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    for at in range(0, len(body), 1 << 14):
                        self.wfile.write(body[at : at + (1 << 14)])
                        self.wfile.flush()
                        time.sleep(pause)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def _r_bomb(self, name: str, n: int) -> None:
                self._send(200, bomb_png(), "image/png")

        return Handler


def free_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SilentServer:
    """A host that accepts connections and never answers: every request times out.
    ``connections`` counts the requests it swallowed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def url(self, kind: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}/{name}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.connections += 1
            self._held.append(conn)

    def __enter__(self) -> SilentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the thread
        self.sock.close()
        for conn in self._held:
            conn.close()
        self.thread.join(5)

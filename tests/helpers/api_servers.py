"""Loopback HTTP servers speaking the APIs promptlake calls, for tests: OpenAI chat
completions (``ChatServer``) and AUTOMATIC1111's txt2img (``A1111Server``).

``script`` queues raw replies (status, body, headers) before the default answers; ``requests``
records each request's path, headers (names in lower case) and JSON body; a cleared ``gate``
holds every answer until it is set (a slow model).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }


class JsonServer:
    """A threaded JSON-over-POST server on 127.0.0.1 that records every request."""

    route = "/"
    prefix = ""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, str | dict, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}{self.prefix}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with srv.lock:
                    srv.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "json": json.loads(body),
                        }
                    )
                    scripted = srv.script.pop(0) if srv.script else None
                srv.gate.wait(120)
                if self.path != srv.route:
                    return self._send(404, {"error": f"no route {self.path}"}, {})
                if scripted is None:
                    scripted = (200, srv.default_reply(json.loads(body)), {})
                self._send(*scripted)

            def _send(self, status: int, body: str | dict, headers: dict[str, str]) -> None:
                raw = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        return Handler

    def default_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ChatServer(JsonServer):
    """``with ChatServer() as srv:`` — ``srv.base_url`` ends in ``/v1``. By default it answers a
    JSON array of prompts: the user's idea plus the second phrase of each example prompt."""

    route, prefix = "/v1/chat/completions", "/v1"

    def default_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        system, user = request["messages"][0]["content"], request["messages"][1]["content"]
        examples = [line[2:] for line in system.splitlines() if line.startswith("- ")]
        styles = [e.split(",")[1].strip() for e in examples if "," in e]
        return completion(json.dumps([f"{user}, {s}, highly detailed" for s in styles[:3]]))


class A1111Server(JsonServer):
    """AUTOMATIC1111's ``/sdapi/v1/txt2img``: a PNG coloured by the seed, carrying its
    ``parameters`` chunk as the web UI writes it."""

    route = "/sdapi/v1/txt2img"

    def default_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        seed = int(request["seed"])
        color = (seed % 251, (seed // 251) % 251, (seed // 63001) % 251)
        img = Image.new("RGB", (request["width"], request["height"]), color)
        text = (
            f"{request['prompt']}\nNegative prompt: {request['negative_prompt']}\n"
            f"Steps: {request['steps']}, Sampler: Euler a, Seed: {seed}, "
            f"Size: {request['width']}x{request['height']}, Model: test-sd"
        )
        info = PngInfo()
        info.add_text("parameters", text)
        out = io.BytesIO()
        img.save(out, "PNG", pnginfo=info)
        b64 = base64.b64encode(out.getvalue()).decode()
        return {"images": [b64], "parameters": request, "info": json.dumps({"seed": seed})}

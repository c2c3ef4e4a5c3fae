"""A reference server of bastion's JSON protocol: a model behind a local HTTP endpoint, in a background thread.

For trying `--endpoint` on a model of one's own, for tests and for the benchmark; a production API
is the user's own (any framework that speaks the protocol of `bastion.deploy.endpoint`). Standard
library only (`http.server`), HTTP/1.1 keep-alive.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import torch
from torch import Tensor

from bastion.core.errors import ConfigError

__all__ = ["ModelServer", "ServedOutput"]

ServedOutput = Literal["logits", "probs", "labels"]


class ModelServer:
    """Serve `model` (a batch in [0, 1] (N, C, H, W) -> logits (N, K)) on `host:port` over bastion's protocol.

    GET answers `info` plus the number of classes, input shape, bounds and output kind; POST {"inputs": ...}
    answers {OUTPUT: ...}. A request with inputs of the wrong shape or outside the bounds gets HTTP 400.
    `respond` is the one place a request is answered: a subclass may override it (a test server that fails
    or stalls).

    Args:
        model: the classifier; called without gradients.
        input_shape: (C, H, W) of the inputs.
        output: what the server reveals.
        info: what GET says about the model besides shape, bounds and output.
        bounds: the input range.
        host, port: where to listen (port 0: a free port; see `url`).
    """

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        *,
        input_shape: tuple[int, int, int],
        output: ServedOutput = "probs",
        info: dict[str, Any] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if output not in ("logits", "probs", "labels"):
            raise ConfigError(f"a server answers logits, probs or labels; got {output!r}")
        self.model = model
        self.input_shape = tuple(input_shape)
        self.output = output
        self.bounds = bounds
        with torch.inference_mode():
            num_classes = int(model(torch.full((1, *input_shape), float(bounds[0]))).shape[1])
        self.info = {
            **(info or {}),
            "num_classes": num_classes,
            "input_shape": list(input_shape),
            "bounds": list(bounds),
            "output": output,
            "encodings": ["json", "f32-base64"],
        }
        self.posts = 0  # POST requests received, answered or not
        self.rows = 0  # images answered
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="bastion-model-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> ModelServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def respond(self, method: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON payload) for one request."""
        if method == "GET":
            return 200, self.info
        with self._lock:
            self.posts += 1
        try:
            x = _inputs(json.loads(body))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError, binascii.Error):
            return 400, {"error": 'the body must be {"inputs": N x C x H x W numbers} or {"inputs_b64", "shape"}'}
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            return 400, {"error": f"inputs must have shape (N, {', '.join(map(str, self.input_shape))})"}
        if x.numel() and (x.min() < self.bounds[0] or x.max() > self.bounds[1]):
            return 400, {"error": f"inputs must lie in {list(self.bounds)}"}
        with torch.inference_mode():
            logits = self.model(x).float()
        with self._lock:
            self.rows += x.shape[0]
        if self.output == "labels":
            return 200, {"labels": logits.argmax(1).tolist()}
        return 200, {self.output: (logits if self.output == "logits" else logits.softmax(1)).tolist()}


def _inputs(payload: dict[str, Any]) -> Tensor:
    """The images of a request: nested lists, or base64 float32 little-endian bytes with their shape."""
    if "inputs_b64" in payload:
        raw = base64.b64decode(payload["inputs_b64"], validate=True)
        shape = [int(d) for d in payload["shape"]]
        return torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(shape)
    return torch.tensor(payload["inputs"], dtype=torch.float32)


def _handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection for a whole attack
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def do_GET(self) -> None:
            self._reply(*server.respond("GET", b""))

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            self._reply(*server.respond("POST", body))

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout) before the answer
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per request on stderr
            return None

    return Handler

"""An HTTP endpoint that classifies images, queried over bastion's JSON protocol (see docs/deployed.md).

Protocol:
    POST URL   {"inputs": [[[[...]]]]}          N images, NCHW nested lists of floats in the bounds
           or  {"inputs_b64": "...", "shape": [N, C, H, W]}   the same as float32 little-endian bytes, base64
         200   {"logits": [[...]]}  or  {"probs": [[...]]}  or  {"labels": [...]}
    GET  URL   (optional) {"name", "num_classes", "input_shape", "bounds", "output", "classes",
               "encodings", ...}: what the model says about itself; "output" is logits, probs or labels;
               "encodings" lists the request forms it takes beside "json" ("f32-base64").

Nested lists are what any JSON stack reads; printing and parsing a float per pixel costs about a
millisecond per 28 x 28 image, so the client sends base64 float32 where the endpoint offers it.

The client splits a query into requests of at most `batch_size` images, keeps to a rate limit
(requests per second), and retries a request that times out, cannot connect, or gets a 5xx or 429
answer, with exponential back-off; a request that still fails raises `EndpointError`. Retrying is
the client's business: the oracle counts a query once, when its answer is back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from bastion.core.errors import ConfigError, EndpointError, require_extra
from bastion.core.oracle import Reveals
from bastion.deploy._base import DeployedModel

__all__ = ["EndpointModel", "EndpointStats"]

# The response keys of the protocol and what each reveals.
_ANSWERS: dict[str, Reveals] = {"logits": "logits", "probs": "probs", "labels": "label"}
_OUTPUTS: dict[str, Reveals] = {"logits": "logits", "probs": "probs", "labels": "label", "label": "label"}
Encoding = Literal["auto", "json", "f32-base64"]


class EndpointStats:
    """What the client sent: requests (retries included), retries, requests that finally failed, rows answered."""

    def __init__(self) -> None:
        self.requests = 0
        self.retries = 0
        self.failures = 0
        self.rows = 0

    def to_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "retries": self.retries, "failures": self.failures, "rows": self.rows}


class EndpointModel(DeployedModel):
    """A classifier behind an HTTP endpoint: a `BlackBoxModel` for oracles and black-box attacks.

    What the endpoint reveals (logits, probabilities or labels) is what its answers carry: an endpoint
    that answers labels gives oracles of label output only (decision-based attacks).

    Args:
        url: the endpoint (http:// or https://).
        input_shape, num_classes, bounds: what the endpoint's GET does not say (e.g. from the data set).
        batch_size: the most images in one request.
        rate_limit: the most requests per second (None: no limit).
        retries: how many times a failed request is sent again.
        backoff: the first wait before a retry, in seconds; it doubles each retry, up to `max_backoff`.
        timeout: seconds a request may take before it counts as failed (and is retried).
        headers: sent with every request (e.g. an API key).
        encoding: how images travel: `json` nested lists, `f32-base64`, or `auto` (base64 where the
            endpoint's GET lists it in `encodings`, else nested lists).
    """

    error = EndpointError

    def __init__(
        self,
        url: str,
        *,
        input_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
        bounds: tuple[float, float] | None = None,
        batch_size: int = 64,
        rate_limit: float | None = None,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
        encoding: Encoding = "auto",
    ) -> None:
        httpx = require_extra("httpx", extra="deploy", purpose="an HTTP endpoint")
        if encoding not in get_args(Encoding):
            raise ConfigError(f"encoding must be one of {', '.join(get_args(Encoding))}; got {encoding!r}")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"an endpoint is an http:// or https:// URL; got {url!r}")
        if rate_limit is not None and rate_limit <= 0:
            raise ConfigError(f"rate_limit is requests per second, > 0; got {rate_limit}")
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ConfigError(f"need retries >= 0, backoff >= 0 and timeout > 0; got {retries}, {backoff}, {timeout}")
        self.url = url
        self.rate_limit = rate_limit
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.stats = EndpointStats()
        self._httpx = httpx
        self._client = httpx.Client(timeout=timeout, headers=headers or {})
        self._last_start = -float("inf")
        self.encoding: Encoding = "json"  # the GET below sends no images
        info = self._info()
        offered = info.get("encodings") or []
        if encoding == "f32-base64" and "f32-base64" not in offered:
            raise ConfigError(f"{url} does not list f32-base64 among its encodings ({offered}); use json")
        self.encoding = "f32-base64" if encoding != "json" and "f32-base64" in offered else "json"
        shape = info.get("input_shape") or input_shape
        if not shape or len(shape) != 3:
            raise ConfigError(f"{url}: the input shape (C, H, W) is unknown; the endpoint's GET does not say it")
        if input_shape is not None and tuple(input_shape) != tuple(shape):
            raise ConfigError(f"{url} takes inputs of shape {tuple(shape)}, not {tuple(input_shape)}")
        lo_hi = info.get("bounds") or bounds or (0.0, 1.0)
        output, k = info.get("output"), info.get("num_classes") or num_classes
        if output is None or k is None:  # ask once, outside any budget, what an answer looks like
            probe = self._post(torch.zeros(1, *shape) + float(lo_hi[0]))
            output, k = probe[0], k or (probe[1].shape[1] if probe[1].dim() == 2 else None)
        if output not in _OUTPUTS:
            raise EndpointError(f"{url}: output must be logits, probs or labels; the endpoint says {output!r}")
        if k is None:
            raise ConfigError(f"{url}: the number of classes is unknown; the endpoint's GET does not say it")
        identity = hashlib.sha256(json.dumps({"url": url, "info": info}, sort_keys=True).encode()).hexdigest()
        super().__init__(
            name=url,
            identity=identity,
            reveals=_OUTPUTS[output],
            num_classes=int(k),
            input_shape=tuple(shape),  # type: ignore[arg-type]
            bounds=(float(lo_hi[0]), float(lo_hi[1])),
            batch_size=batch_size,
            info=info,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> EndpointModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a model dropped without close() (an audit target) leaves no socket open
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()

    # --- requests ------------------------------------------------------------------------------------
    def _answer_batch(self, x: Tensor) -> Tensor:
        key, out = self._post(x)
        if _ANSWERS[key] != self.reveals:
            raise EndpointError(f"{self.url} answered {key} but said it serves {self.reveals}")
        self.stats.rows += x.shape[0]
        return out

    def _info(self) -> dict[str, Any]:
        """The endpoint's GET self-description; {} when it has none (404 or 405)."""
        response = self._send("GET", None)
        if response.status_code in (404, 405):
            return {}
        if response.status_code != 200:
            raise EndpointError(f"{self.url}: GET answered HTTP {response.status_code}: {_excerpt(response.text)}")
        info = self._json(response)
        if not isinstance(info, dict):
            raise EndpointError(f"{self.url}: GET must answer a JSON object; got {_excerpt(response.text)}")
        return info

    def _post(self, x: Tensor) -> tuple[str, Tensor]:
        if self.encoding == "f32-base64":
            raw = x.to(torch.float32).contiguous().numpy().astype("<f4", copy=False).tobytes()
            body = json.dumps({"inputs_b64": base64.b64encode(raw).decode(), "shape": list(x.shape)}).encode()
        else:
            body = json.dumps({"inputs": x.tolist()}).encode()
        response = self._send("POST", body)
        if response.status_code != 200:
            raise EndpointError(f"{self.url} answered HTTP {response.status_code}: {_excerpt(response.text)}")
        payload = self._json(response)
        keys = [k for k in _ANSWERS if isinstance(payload, dict) and k in payload]
        if len(keys) != 1:
            raise EndpointError(
                f"{self.url} must answer one of {{'logits': ...}}, {{'probs': ...}}, {{'labels': ...}}; got "
                f"{_excerpt(response.text)}"
            )
        try:
            dtype = torch.long if keys[0] == "labels" else torch.float32
            return keys[0], torch.tensor(payload[keys[0]], dtype=dtype)
        except (TypeError, ValueError, RuntimeError):
            raise EndpointError(f"{self.url} answered {keys[0]} that are not a table of numbers") from None

    def _send(self, method: str, body: bytes | None) -> Any:
        """One request, retried with exponential back-off on time-outs, connection errors, 5xx and 429."""
        httpx = self._httpx
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
                time.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
            self._wait_turn()
            self.stats.requests += 1
            try:
                if body is None:
                    response = self._client.get(self.url)
                else:
                    response = self._client.post(self.url, content=body, headers={"content-type": "application/json"})
            except httpx.TimeoutException:
                why = f"no answer within {self.timeout:g} s"
                continue
            except httpx.TransportError as e:
                why = f"{type(e).__name__}: {e}"
                continue
            if response.status_code >= 500 or response.status_code == 429:
                why = f"HTTP {response.status_code}: {_excerpt(response.text)}"
                continue
            return response
        self.stats.failures += 1
        raise EndpointError(f"{method} {self.url} failed {self.retries + 1} time(s); last: {why}")

    def _wait_turn(self) -> None:
        """Keep request starts at least 1/rate_limit seconds apart."""
        if self.rate_limit is None:
            return
        wait = self._last_start + 1.0 / self.rate_limit - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_start = time.monotonic()

    def _json(self, response: Any) -> Any:
        try:
            return json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EndpointError(f"{self.url} did not answer JSON: {_excerpt(response.text)}") from None


def _excerpt(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."

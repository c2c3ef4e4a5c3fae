"""ONNX: export a model to a file that maps images in [0, 1] to logits, and query such a file with onnxruntime.

The file carries what bastion needs to attack it in its `metadata_props` (keys `bastion.*`, JSON
values): the input shape, bounds, classes, the data set and split it was trained on, and the
checkpoint's own metadata, so `bastion attack square --onnx model.onnx` needs nothing else. A file
made elsewhere works too: its input shape is read from the graph (or the data set), its outputs are
taken as logits unless `bastion.output` says `probs`.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bastion._atomic import atomic_path, sha256_file
from bastion.core.errors import CheckpointError, ConfigError, ModelError, require_extra
from bastion.core.oracle import Reveals
from bastion.deploy._base import DeployedModel

__all__ = ["FORMAT", "OnnxModel", "export_onnx", "read_onnx_metadata"]

FORMAT = "bastion-onnx/1"
_PREFIX = "bastion."
OPSET = 17
# The exported graph must give the PyTorch model's logits to this tolerance (relative to their scale).
EXPORT_TOLERANCE = 1e-4


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_shape: tuple[int, int, int],
    bounds: tuple[float, float] = (0.0, 1.0),
    metadata: dict[str, Any] | None = None,
    opset: int = OPSET,
) -> Path:
    """Write `model` (inputs in `bounds` -> logits, its normalisation inside) as an ONNX file, atomically.

    The batch axis is dynamic; the graph's input is `input` (N, C, H, W) float32 and its output `logits`
    (N, K). `metadata` (plain JSON values) is stored in the file's `metadata_props` as `bastion.KEY`,
    beside the input shape, bounds and number of classes. The file is read back with onnxruntime and
    checked to give the model's logits on a few random inputs before it replaces `path`.

    Uses PyTorch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`), which needs
    the `onnx` package and not `onnxscript`.
    """
    onnx = require_extra("onnx", extra="deploy", purpose="ONNX export")
    ort = require_extra("onnxruntime", extra="deploy", purpose="ONNX export")
    model = copy.deepcopy(model).cpu().eval()  # the caller's model keeps its device and mode
    gen = torch.Generator().manual_seed(0)
    lo, hi = bounds
    probe = lo + (hi - lo) * torch.rand(4, *input_shape, generator=gen)
    with torch.inference_mode():
        expected = model(probe)
    if not isinstance(expected, Tensor) or expected.dim() != 2:
        raise ModelError("only a model that returns logits (N, K) can be exported to ONNX")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # torch warns that the TorchScript exporter is deprecated in favour of the dynamo one (onnxscript)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            model,
            (probe,),
            buf,
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
        )
    proto = onnx.load_from_string(buf.getvalue())
    props = {
        "format": FORMAT,
        "output": "logits",
        "input_shape": list(input_shape),
        "bounds": [float(lo), float(hi)],
        "num_classes": int(expected.shape[1]),
        **(metadata or {}),
    }
    onnx.helper.set_model_props(proto, {_PREFIX + k: json.dumps(v) for k, v in props.items()})
    data = proto.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": probe.numpy()})[0])
    scale = max(1.0, float(expected.abs().max()))
    if not torch.allclose(got, expected, atol=EXPORT_TOLERANCE * scale, rtol=0):
        raise ModelError(
            f"the exported graph's logits differ from the model's by {float((got - expected).abs().max()):.3g}; "
            "the model uses an operation ONNX cannot express faithfully"
        )
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The `bastion.*` entries of an ONNX file's `metadata_props` (empty for a file made elsewhere)."""
    return _session(Path(path))[1]


def _session(path: Path, threads: int | None = None) -> tuple[Any, dict[str, Any]]:
    ort = require_extra("onnxruntime", extra="deploy", purpose="an ONNX model")
    if not path.is_file():
        raise CheckpointError(f"ONNX file {str(path)!r} does not exist")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a bad file
        raise CheckpointError(f"{path} is not a readable ONNX model: {str(e).splitlines()[0]}") from None
    meta: dict[str, Any] = {}
    for k, v in session.get_modelmeta().custom_metadata_map.items():
        if k.startswith(_PREFIX):
            try:
                meta[k[len(_PREFIX) :]] = json.loads(v)
            except json.JSONDecodeError:
                raise CheckpointError(f"{path}: metadata {k!r} is not JSON ({v[:40]!r})") from None
    return session, meta


class OnnxModel(DeployedModel):
    """An ONNX file queried through onnxruntime on the CPU: a `BlackBoxModel` for oracles and black-box attacks.

    Args:
        path: the ONNX file (one input (N, C, H, W) float32, first output (N, K)).
        input_shape: (C, H, W) when neither the file's metadata nor its graph says it.
        batch_size: the most rows sent to the session at once.
        threads: onnxruntime's intra-op threads (default: torch's thread count, as the in-process model).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        input_shape: tuple[int, int, int] | None = None,
        batch_size: int = 256,
        threads: int | None = None,
    ) -> None:
        path = Path(path)
        self._session, meta = _session(path, threads)
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        graph_shape = tuple(inp.shape[1:]) if len(inp.shape) == 4 else ()
        shape = meta.get("input_shape") or (graph_shape if all(isinstance(d, int) for d in graph_shape) else None)
        shape = shape or input_shape
        if not shape or len(shape) != 3:
            raise ConfigError(f"{path.name}: the input shape (C, H, W) is unknown; give it (or --data)")
        if input_shape is not None and tuple(input_shape) != tuple(shape):
            raise ConfigError(f"{path.name} takes inputs of shape {tuple(shape)}, not {tuple(input_shape)}")
        reveals: Reveals = meta.get("output", "logits")
        if reveals not in ("logits", "probs"):
            raise CheckpointError(f"{path.name}: metadata output must be logits or probs; got {reveals!r}")
        num_classes = meta.get("num_classes")
        out_shape = self._session.get_outputs()[0].shape
        if num_classes is None and len(out_shape) == 2 and isinstance(out_shape[1], int):
            num_classes = out_shape[1]
        if num_classes is None:
            num_classes = int(self._run(torch.zeros(1, *shape)).shape[1])
        super().__init__(
            name=path.name,
            identity=sha256_file(path),
            reveals=reveals,
            num_classes=int(num_classes),
            input_shape=tuple(shape),  # type: ignore[arg-type]
            bounds=tuple(meta.get("bounds", (0.0, 1.0))),  # type: ignore[arg-type]
            batch_size=batch_size,
            info=meta,
        )
        self.path = path

    def _run(self, x: Tensor) -> Tensor:
        try:
            out = self._session.run(None, {self._input: x.numpy()})[0]
        except Exception as e:  # onnxruntime's own error types: a graph that cannot take this input
            raise ModelError(f"onnxruntime could not run the model: {str(e).splitlines()[0]}") from None
        return torch.from_numpy(out)

    def _answer_batch(self, x: Tensor) -> Tensor:
        return self._run(x)

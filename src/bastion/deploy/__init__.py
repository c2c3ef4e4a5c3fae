"""bastion.deploy: models known only by their answers, as they are deployed.

An ONNX file (`OnnxModel`, queried with onnxruntime) and an HTTP endpoint (`EndpointModel`, bastion's
JSON protocol) are `BlackBoxModel`s: they make the same `Oracle` as an in-process `Victim` (one query
accounting, one budget, the same post-processors), so every black-box attack runs on them unchanged.
`export_onnx` writes a model to ONNX with what bastion needs in its metadata; `ModelServer` serves a
model over the protocol. onnx, onnxruntime and httpx are the `deploy` extra, imported when used.
"""

from bastion.deploy._base import DeployedModel
from bastion.deploy.endpoint import EndpointModel, EndpointStats
from bastion.deploy.onnxfile import OnnxModel, export_onnx, read_onnx_metadata
from bastion.deploy.server import ModelServer, ServedOutput

__all__ = [
    "DeployedModel",
    "EndpointModel",
    "EndpointStats",
    "ModelServer",
    "OnnxModel",
    "ServedOutput",
    "export_onnx",
    "read_onnx_metadata",
]

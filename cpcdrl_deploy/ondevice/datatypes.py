"""The one table of tensor datatypes: KServe v2 names <-> numpy, ONNX and Triton.

Uploaded beside ``runner.py`` (the device has only the standard library and
numpy), imported by the server, the manifest reader and the export on the
host. ONNX element types are ``onnx.TensorProto`` numbers, written out so
that the device needs no ``onnx`` package.
"""

from __future__ import annotations

import numpy as np

# name: (numpy dtype, onnx.TensorProto element type, ONNX Runtime type string)
_TABLE = {
    "FP32": (np.float32, 1, "tensor(float)"),
    "FP16": (np.float16, 10, "tensor(float16)"),
    "FP64": (np.float64, 11, "tensor(double)"),
    "UINT8": (np.uint8, 2, "tensor(uint8)"),
    "INT8": (np.int8, 3, "tensor(int8)"),
    "INT32": (np.int32, 6, "tensor(int32)"),
    "INT64": (np.int64, 7, "tensor(int64)"),
    "BOOL": (np.bool_, 9, "tensor(bool)"),
}

NUMPY: dict[str, np.dtype] = {name: np.dtype(row[0]) for name, row in _TABLE.items()}
"""KServe datatype name -> numpy dtype."""
NAMES: dict[np.dtype, str] = {dtype: name for name, dtype in NUMPY.items()}
"""numpy dtype -> KServe datatype name."""
FROM_ONNX = {row[1]: name for name, row in _TABLE.items()}
"""onnx.TensorProto element type -> KServe datatype name."""
FROM_ORT = {row[2]: name for name, row in _TABLE.items()}
"""ONNX Runtime's ``tensor(float)`` -> KServe datatype name."""


def triton_type(name: str) -> str:
    """A KServe datatype name as Triton's ``config.pbtxt`` spells it (``FP32`` -> ``TYPE_FP32``)."""
    if name not in _TABLE:
        raise KeyError(f"no Triton type for datatype {name!r}")
    return f"TYPE_{name}"

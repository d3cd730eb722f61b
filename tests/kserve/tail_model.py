"""An exported tail served by KServe's Python model server (run in its own environment: kserve pins its own stack).

    python tail_model.py TAIL.onnx MODEL_NAME HTTP_PORT

The way a user would put cpcdrl's tail on KServe: a kserve.Model wrapping
ONNX Runtime, answering in binary when asked (the edge runner asks). The
model copies the request's id into the response, which KServe requires.
"""

import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class Tail(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.sess = None

    def load(self) -> bool:
        self.sess = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        (y,) = self.sess.run(None, {self.sess.get_inputs()[0].name: x})
        out = InferOutput(name=self.sess.get_outputs()[0].name, shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=True)
        return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=[out], use_binary_outputs=True)


if __name__ == "__main__":
    path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = Tail(name, path)
    model.load()
    ModelServer(http_port=port, grpc_port=port + 1, enable_grpc=False, enable_latency_logging=False).start([model])

"""KServe's Python model server (the `kserve` package) wrapping onnxruntime: the benchmark's
anchor. Open Inference Protocol v2 REST on --port, one worker, gRPC off.

    python3 kserve_server.py --model MODEL.onnx --name NAME --port PORT
"""
import argparse

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.session = None
        self.load()

    def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        outs = self.session.run(None, {self.input_name: x})
        infer_outputs = [
            InferOutput(name=n, shape=list(o.shape), datatype="FP32", data=o) for n, o in zip(self.output_names, outs)
        ]
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=infer_outputs)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    model = OnnxModel(a.name, a.model)
    kserve.ModelServer(http_port=a.port, workers=1, enable_grpc=False, enable_latency_logging=False).start([model])

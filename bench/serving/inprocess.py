"""The benchmark's model run in process by onnxruntime (the anchor's own runtime): p50 and p99
of one `session.run` on the request's input, one JSON line.

    python3 inprocess.py MODEL.onnx BODY.json [ITERATIONS]
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

model, body = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
req = json.load(open(body))
inp = req["inputs"][0]
x = np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
for _ in range(500):
    s.run(None, {name: x})
lat = []
for _ in range(n):
    t0 = time.perf_counter()
    s.run(None, {name: x})
    lat.append((time.perf_counter() - t0) * 1000)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, max(0, int(np.ceil(p * len(lat))) - 1))]
print(json.dumps({"p50_ms": q(0.5), "p99_ms": q(0.99), "mean_ms": sum(lat) / len(lat), "samples": n}))

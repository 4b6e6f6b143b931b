"""Real clients against `capstan serve`, for tests/e2e/tests/serving.rs.

    python3 serving_client.py register TRACKING_URL NAME MODEL.onnx [--alias ALIAS]
        Logs MODEL.onnx with mlflow.onnx.log_model (MLflow 3: a logged model), registers it
        as a new version of NAME and, with --alias, points ALIAS at it. Prints
        {"version": "N", "model_uri": "..."}.

    python3 serving_client.py check SERVE_URL NAME MODEL.onnx VERSION
        Talks to the server with tritonclient.http (binary_data=False) and with kserve's
        InferenceRESTClient (which has no metadata call: tritonclient checks that): live, ready,
        server and model metadata, model ready, and an infer
        whose outputs must equal onnxruntime's on the same input within 1e-5. Prints a JSON
        summary; exits 1 with the reason on any mismatch.
"""
import argparse
import asyncio
import json
import sys

import numpy as np
import onnxruntime as ort

TOL = 1e-5


def fail(msg: str) -> None:
    print(json.dumps({"ok": False, "error": msg}))
    sys.exit(1)


def register(args) -> None:
    import mlflow
    import onnx
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(args.url)
    mlflow.set_experiment("serving-e2e")
    model = onnx.load(args.model)
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            model, name="model", registered_model_name=args.name, save_as_external_data=False
        )
    version = str(info.registered_model_version)
    if args.alias:
        MlflowClient().set_registered_model_alias(args.name, args.alias, version)
    print(json.dumps({"version": version, "model_uri": info.model_uri}))


def reference(model_path: str, x: np.ndarray) -> dict:
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x})))


def compare(who: str, name: str, got: np.ndarray, want: np.ndarray) -> None:
    got = np.asarray(got)
    if got.shape != want.shape:
        fail(f"{who}: output {name}: shape {got.shape} != onnxruntime's {want.shape}")
    if want.dtype.kind == "f":
        diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if want.size else 0.0
        if diff > TOL:
            fail(f"{who}: output {name}: max difference {diff} > {TOL}")
    elif not np.array_equal(got, want):
        fail(f"{who}: output {name}: {got.tolist()} != {want.tolist()}")


def check_triton(url: str, name: str, version: str, x: np.ndarray, want: dict) -> dict:
    import tritonclient.http as httpclient

    host = url.split("://", 1)[1]
    c = httpclient.InferenceServerClient(url=host)
    if not c.is_server_live():
        fail("tritonclient: server not live")
    if not c.is_server_ready():
        fail("tritonclient: server not ready")
    if not c.is_model_ready(name):
        fail("tritonclient: model not ready")
    if not c.is_model_ready(name, model_version=version):
        fail(f"tritonclient: model version {version} not ready")
    server_meta = c.get_server_metadata()
    meta = c.get_model_metadata(name)
    if meta["name"] != name or version not in meta["versions"]:
        fail(f"tritonclient: metadata {meta}")
    if [i["name"] for i in meta["inputs"]] != ["input"] or meta["inputs"][0]["datatype"] != "FP32":
        fail(f"tritonclient: metadata inputs {meta['inputs']}")
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    outs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in want]
    res = c.infer(name, [inp], outputs=outs, request_id="triton-1")
    for n, w in want.items():
        compare("tritonclient", n, res.as_numpy(n), w)
    # Named outputs: ask for one only.
    res = c.infer(name, [inp], outputs=[httpclient.InferRequestedOutput("label", binary_data=False)])
    got = res.get_response()["outputs"]
    if [o["name"] for o in got] != ["label"]:
        fail(f"tritonclient: asked for 'label' only, got {[o['name'] for o in got]}")
    compare("tritonclient", "label", res.as_numpy("label"), want["label"])
    # A wrong shape comes back as an exception carrying the server's message.
    bad = httpclient.InferInput("input", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32), binary_data=False)
    try:
        c.infer(name, [bad])
        fail("tritonclient: a [1, 3] input was accepted")
    except httpclient.InferenceServerException as e:
        if "shape" not in str(e):
            fail(f"tritonclient: wrong-shape error does not mention the shape: {e}")
        bad_shape_error = str(e)
    return {"server": server_meta.get("name"), "outputs": sorted(want), "bad_shape_error": bad_shape_error}


def check_kserve(url: str, name: str, version: str, x: np.ndarray, want: dict) -> dict:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def go() -> dict:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            if not await client.is_server_live(url):
                fail("kserve: server not live")
            if not await client.is_server_ready(url):
                fail("kserve: server not ready")
            if not await client.is_model_ready(url, name):
                fail("kserve: model not ready")
            inp = InferInput(name="input", shape=list(x.shape), datatype="FP32")
            inp.set_data_from_numpy(x, binary_data=False)
            req = InferRequest(model_name=name, infer_inputs=[inp], request_id="kserve-1")
            res = await client.infer(url, req, model_name=name)
            if res.id != "kserve-1":
                fail(f"kserve: response id {res.id!r}")
            got = {o.name: o.as_numpy() for o in res.outputs}
            for n, w in want.items():
                if n not in got:
                    fail(f"kserve: output {n} missing from {sorted(got)}")
                compare("kserve", n, got[n], w)
            return {"model_name": res.model_name, "outputs": sorted(got)}
        finally:
            await client.close()

    return asyncio.run(go())


def check(args) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    want = reference(args.model, x)
    summary = {
        "ok": True,
        "triton": check_triton(args.url, args.name, args.version, x, want),
        "kserve": check_kserve(args.url, args.name, args.version, x, want),
    }
    print(json.dumps(summary))


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("register")
    r.add_argument("url")
    r.add_argument("name")
    r.add_argument("model")
    r.add_argument("--alias")
    c = sub.add_parser("check")
    c.add_argument("url")
    c.add_argument("name")
    c.add_argument("model")
    c.add_argument("version")
    a = p.parse_args()
    register(a) if a.cmd == "register" else check(a)


if __name__ == "__main__":
    main()

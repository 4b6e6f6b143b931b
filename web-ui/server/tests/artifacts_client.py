"""Artifacts through Capstan's mlflow-artifacts proxy with the real, unmodified mlflow client.

Given MLFLOW_TRACKING_URI (a running Capstan server) and MLFLOW_RUN_ID (an existing run whose
artifact_uri is mlflow-artifacts:/...), log artifacts every way a training script does
(log_artifact, log_artifacts with a nested folder, log_text, log_dict, a 20 MB binary file),
list them (nested), download them and compare byte for byte, overwrite one, delete a folder.
Prints one JSON line `{"sha256": {artifact path: hex}}` of what the run holds at the end, for
the Rust side to check against the destination itself.
Exits 0 on success; 2 when mlflow is not installed; anything else is a failure.

Run by tests/artifacts_client.rs; by hand:
    MLFLOW_TRACKING_URI=http://127.0.0.1:PORT MLFLOW_RUN_ID=<run> python3 artifacts_client.py
"""

import filecmp
import hashlib
import json
import os
import random
import sys
import tempfile

try:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
except ImportError as exc:  # the Rust test turns this into a failure with the fix
    print(
        f"cannot import mlflow ({exc}); install the client: "
        "pip install mlflow-skinny==3.17.2 (or run scripts/install-deps.sh)",
        file=sys.stderr,
    )
    sys.exit(2)

BIG = 20 * 1024 * 1024 + 12345


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def walk(root):
    """Relative path -> absolute path of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            full = os.path.join(d, name)
            out[os.path.relpath(full, root).replace(os.sep, "/")] = full
    return out


def main():
    run_id = os.environ["MLFLOW_RUN_ID"]
    client = MlflowClient()
    run = client.get_run(run_id)
    check(run.info.artifact_uri.startswith("mlflow-artifacts:/"), f"artifact_uri {run.info.artifact_uri}")
    work = tempfile.mkdtemp(prefix="capstan-artifacts-")
    src = os.path.join(work, "src")

    # What gets logged: one file, a nested folder (odd names included), a text, a dict, and
    # a binary file bigger than the server's 16 MiB body limit for other endpoints.
    single = os.path.join(src, "single.txt")
    write(single, b"one file\n")
    folder = os.path.join(src, "folder")
    tree = {
        "a.txt": b"a\n",
        "sub/b.json": b'{"b": 2}',
        "sub/deeper/c.bin": bytes(range(256)) * 10,
        "sub/with space.txt": b"spaces\n",
        "sub/odd [1]+(x)=ü.txt": b"odd\n",
        "empty.dat": b"",
    }
    for rel, data in tree.items():
        write(os.path.join(folder, rel), data)
    big = os.path.join(src, "big.bin")
    write(big, random.Random(7).randbytes(BIG))

    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifact(single)
        mlflow.log_artifact(single, artifact_path="nested/dir")
        mlflow.log_artifacts(folder, artifact_path="tree")
        mlflow.log_text("hello text\n", "texts/hello.txt")
        mlflow.log_dict({"a": 1, "b": [1, 2]}, "dicts/d.json")
        mlflow.log_artifact(big, artifact_path="blobs")

    # Listing: the root, a nested folder, a file (empty, as MLflow lists files).
    root = {f.path: (f.is_dir, f.file_size) for f in client.list_artifacts(run_id)}
    check(
        root
        == {
            "blobs": (True, None),
            "dicts": (True, None),
            "nested": (True, None),
            "single.txt": (False, 9),
            "texts": (True, None),
            "tree": (True, None),
        },
        f"root listing: {root}",
    )
    sub = {f.path: (f.is_dir, f.file_size) for f in client.list_artifacts(run_id, "tree/sub")}
    check(
        sub
        == {
            "tree/sub/b.json": (False, 8),
            "tree/sub/deeper": (True, None),
            "tree/sub/odd [1]+(x)=ü.txt": (False, 4),
            "tree/sub/with space.txt": (False, 7),
        },
        f"tree/sub listing: {sub}",
    )
    blobs = client.list_artifacts(run_id, "blobs")
    check([(f.path, f.file_size) for f in blobs] == [("blobs/big.bin", BIG)], f"blobs: {blobs}")
    check(client.list_artifacts(run_id, "single.txt") == [], "a file lists as empty")
    check(client.list_artifacts(run_id, "no/such/dir") == [], "a missing folder lists as empty")

    # Download everything and compare byte for byte.
    dst = os.path.join(work, "dst")
    os.makedirs(dst)
    got_root = client.download_artifacts(run_id, "", dst)
    got = walk(got_root)
    want = {"single.txt": single, "nested/dir/single.txt": single, "blobs/big.bin": big}
    want.update({f"tree/{rel}": os.path.join(folder, rel) for rel in tree})
    check(set(got) == set(want) | {"texts/hello.txt", "dicts/d.json"}, f"downloaded: {sorted(got)}")
    for rel, path in want.items():
        check(filecmp.cmp(got[rel], path, shallow=False), f"{rel} differs after download")
    with open(got["texts/hello.txt"], "rb") as f:
        check(f.read() == b"hello text\n", "log_text content")
    with open(got["dicts/d.json"]) as f:
        check(json.load(f) == {"a": 1, "b": [1, 2]}, "log_dict content")

    # One file, and the loaders.
    one = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="blobs/big.bin", dst_path=work)
    check(sha256(one) == sha256(big), "big.bin differs after a single download")
    check(mlflow.artifacts.load_text(f"runs:/{run_id}/texts/hello.txt") == "hello text\n", "load_text")
    check(mlflow.artifacts.load_dict(f"runs:/{run_id}/dicts/d.json") == {"a": 1, "b": [1, 2]}, "load_dict")

    # A missing artifact is RESOURCE_DOES_NOT_EXIST.
    try:
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="texts/missing.txt", dst_path=work)
        raise AssertionError("downloading a missing artifact succeeded")
    except MlflowException as exc:
        check("RESOURCE_DOES_NOT_EXIST" in str(exc) or exc.error_code == "RESOURCE_DOES_NOT_EXIST", str(exc))

    # Overwrite (a retried upload replaces), then delete a folder through the repository.
    with mlflow.start_run(run_id=run_id):
        mlflow.log_text("second version\n", "texts/hello.txt")
    check(mlflow.artifacts.load_text(f"runs:/{run_id}/texts/hello.txt") == "second version\n", "overwrite")
    repo = get_artifact_repository(run.info.artifact_uri)
    repo.delete_artifacts("nested")
    paths = [f.path for f in client.list_artifacts(run_id)]
    check("nested" not in paths and "tree" in paths, f"after deleting nested: {paths}")

    final = os.path.join(work, "final")
    os.makedirs(final)
    files = walk(client.download_artifacts(run_id, "", final))
    print(json.dumps({"sha256": {rel: sha256(p) for rel, p in sorted(files.items())}}))


if __name__ == "__main__":
    main()

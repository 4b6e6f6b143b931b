"""Loads the UI benchmark's data into an MLflow-compatible server through its REST API
(the same requests for Capstan and for `mlflow server`) and prints it as JSON.

    python3 load.py <tracking-uri> <runs> <big-points>

One experiment with <runs> runs (10 metrics, 5 params each, 8 threads), and a second one
with a single run holding one metric, `big`, of <big-points> steps (log-batch, 1000 points
per request, 4 threads).
"""

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

uri, n_runs, big = sys.argv[1].rstrip("/"), int(sys.argv[2]), int(sys.argv[3])
api = uri + "/api/2.0/mlflow"
local = threading.local()


def post(path, body):
    s = getattr(local, "s", None)
    if s is None:
        s = local.s = requests.Session()
    for attempt in range(5):
        r = s.post(f"{api}/{path}", json=body, timeout=120)
        if r.status_code < 500:
            break
        time.sleep(0.5 * (attempt + 1))
    r.raise_for_status()
    return r.json()


suffix = str(int(time.time()))
exp = post("experiments/create", {"name": f"ui-bench-runs-{suffix}"})["experiment_id"]
now = int(time.time() * 1000)


def one_run(i):
    run = post("runs/create", {"experiment_id": exp, "run_name": f"run-{i:05d}", "start_time": now + i})["run"]
    rid = run["info"]["run_id"]
    metrics = [{"key": f"m{k}", "value": (i * 7 + k) % 101 / 100.0, "timestamp": now, "step": 0} for k in range(10)]
    params = [{"key": f"p{k}", "value": str((i + k) % 13)} for k in range(5)]
    post("runs/log-batch", {"run_id": rid, "metrics": metrics, "params": params})


t0 = time.time()
with ThreadPoolExecutor(8) as pool:
    list(pool.map(one_run, range(n_runs)))
runs_s = time.time() - t0

exp_big = post("experiments/create", {"name": f"ui-bench-big-{suffix}"})["experiment_id"]
big_run = post("runs/create", {"experiment_id": exp_big, "run_name": "big", "start_time": now})["run"]["info"]["run_id"]


def chunk(start):
    pts = [
        {"key": "big", "value": 1.0 / (1 + s / 1000.0) + 0.05 * ((s * 2654435761) % 1000) / 1000.0, "timestamp": now + s, "step": s}
        for s in range(start, min(start + 1000, big))
    ]
    post("runs/log-batch", {"run_id": big_run, "metrics": pts})


t0 = time.time()
with ThreadPoolExecutor(4) as pool:
    list(pool.map(chunk, range(0, big, 1000)))
big_s = time.time() - t0
post("runs/update", {"run_id": big_run, "status": "FINISHED", "end_time": now + big})

print(
    json.dumps(
        {
            "experiment_id": exp,
            "runs": n_runs,
            "big_experiment_id": exp_big,
            "big_run": big_run,
            "big_points": big,
            "load_runs_s": round(runs_s, 1),
            "load_big_s": round(big_s, 1),
        }
    )
)

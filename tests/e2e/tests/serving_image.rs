//! ModelDeployments under `capstan up` beyond the builtin process runtime:
//! - an `image` runtime: replicas run as containers through the agent (real Podman, host
//!   network), told their port in `PORT` and finding the model at `/mnt/models`; the image is
//!   an honest Open Inference Protocol v2 server built here without a registry (a root
//!   filesystem holding the `capstan` binary and the shared libraries `ldd` lists, imported
//!   with `podman import` and cached by the binary's content hash); called through the Capstan
//!   server with the real tritonclient and kserve clients, outputs equal to onnxruntime's
//!   within 1e-5;
//! - GPUs per replica from the same allocation as TrainingJobs (`--simulate-gpus`): a serving
//!   replica and a job get disjoint GPUs, a job finds the serving GPU taken, and a deployment
//!   asking for more GPUs than are free waits with the reason.
//!
//! Needs python3 with mlflow-skinny, onnx, onnxruntime, tritonclient[http] and kserve, and
//! for the image test a Podman Docker-API service (`CAPSTAN_DOCKER_SOCKET`, see
//! scripts/podman-setup.sh), `strip`, `ldd`, `tar` and `sha256sum`; fails with that message
//! when they are missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_e2e::python::{python, python_script, require_python_packages};
use capstan_e2e::{
    all_containers_of, capstan_bin, docker_socket_or_fail, podman, procs_with_env, running_containers_of, unique_name,
    Capstan,
};
use serde_json::{json, Value};

/// Builds an ONNX classifier and registers it as version 1 of a new model; (model name, file).
fn registered_model(capstan: &Capstan, prefix: &str) -> (String, PathBuf) {
    let path = capstan.scratch().join(format!("{prefix}.onnx"));
    let out = Command::new("python3")
        .arg(python_script("onnx_models.py"))
        .arg("classifier")
        .arg(&path)
        .output()
        .expect("python3");
    assert!(out.status.success(), "building the ONNX model: {}", String::from_utf8_lossy(&out.stderr));
    let model = unique_name(prefix).replace('-', "_");
    let reg = python(
        &[
            python_script("serving_client.py").to_str().unwrap(),
            "register",
            capstan.url(),
            &model,
            path.to_str().unwrap(),
        ],
        &[("MLFLOW_TRACKING_URI", capstan.url())],
        "registering the model with mlflow",
    );
    assert_eq!(reg["version"], json!("1"), "{reg}");
    (model, path)
}

fn tool(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e} (is it installed?)"));
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies `src` to the same absolute path under `root`.
fn copy_into(root: &Path, src: &Path) {
    let dst = root.join(src.strip_prefix("/").unwrap());
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copying {} into the image: {e}", src.display()));
}

const IMAGE_REPO: &str = "localhost/capstan-serve-e2e";
/// Version of the image recipe below (part of the tag: a changed recipe builds anew).
const RECIPE: u32 = 2;
/// The CA bundle copied into the image (Debian's path).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `localhost/capstan-serve-e2e:<first 16 hex of the capstan binary's sha256>-<RECIPE>`: a root
/// filesystem holding the stripped `capstan` binary as its entrypoint, the shared libraries
/// `ldd` lists and the loader; imported with `podman import` unless that tag exists already
/// (older tags are removed).
fn serve_image() -> String {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let bin = capstan_bin();
            let sum = tool(Command::new("sha256sum").arg(&bin), "sha256sum of the capstan binary");
            // Keyed by the binary's content and this recipe's version.
            let tag = format!("{IMAGE_REPO}:{}-{RECIPE}", &sum[..16]);
            if podman(&["image", "exists", &tag]).code == 0 {
                return tag;
            }
            let work = tempfile::tempdir().unwrap();
            let root = work.path().join("rootfs");
            std::fs::create_dir_all(root.join("tmp")).unwrap();
            std::fs::create_dir_all(root.join("mnt/models")).unwrap();
            tool(Command::new("strip").arg("-o").arg(root.join("capstan")).arg(&bin), "strip");
            let ldd = tool(Command::new("ldd").arg(&bin), "ldd of the capstan binary");
            for line in ldd.lines() {
                // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
                let path = match line.split_once("=>") {
                    Some((_, rest)) => rest.split_whitespace().next(),
                    None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
                };
                if let Some(p) = path.filter(|p| p.starts_with('/')) {
                    copy_into(&root, &std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p)));
                    // The name the binary asks for (a symlink's own path) must exist too.
                    copy_into(&root, Path::new(p));
                }
            }
            // An HTTP client without CA certificates refuses to start: ship the host's bundle,
            // as any real image does.
            copy_into(&root, Path::new(CA_BUNDLE));
            let tar = work.path().join("rootfs.tar");
            tool(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg("."), "tar of the image rootfs");
            let out = podman(&["import", "--change", "ENTRYPOINT [\"/capstan\"]", tar.to_str().unwrap(), &tag]);
            assert_eq!(out.code, 0, "podman import failed: {}", out.stderr);
            let listed = podman(&[
                "images",
                "--filter",
                &format!("reference={IMAGE_REPO}"),
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ]);
            for old in listed.stdout.lines().map(str::trim).filter(|t| !t.is_empty() && *t != tag) {
                let _ = podman(&["rmi", old]);
            }
            tag
        })
        .clone()
}

fn wait_for(capstan: &Capstan, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (st, v) = capstan.get(path);
        if st == 200 && pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: timed out waiting for {what}; last:\n{}\nserver log:\n{}",
            serde_json::to_string_pretty(&v["status"]).unwrap(),
            capstan.log_tail(60)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn mdep_path(name: &str) -> String {
    format!("/apis/capstan.dev/v1alpha1/namespaces/default/modeldeployments/{name}")
}

fn condition<'a>(d: &'a Value, type_: &str) -> Option<&'a Value> {
    d["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// GPUs of every serving replica in a deployment's status.
fn serving_gpus(d: &Value) -> Vec<u64> {
    d["status"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| v["replicaGpus"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["gpus"].as_array().cloned().unwrap_or_default())
        .filter_map(|g| g.as_u64())
        .collect()
}

/// Removes the containers of a replica set (label `capstan.dev/job-uid`) when dropped, so a
/// failed test leaves none behind.
struct RemoveContainers(String);

impl Drop for RemoveContainers {
    fn drop(&mut self) {
        for id in all_containers_of(&self.0) {
            let _ = podman(&["rm", "-f", &id]);
        }
    }
}

#[test]
fn image_runtime_deployment_runs_containers_and_answers_tritonclient() {
    require_python_packages();
    docker_socket_or_fail();
    let image = serve_image();
    let capstan = Capstan::start_with_containers();
    let (model, file) = registered_model(&capstan, "imgclf");
    let name = unique_name("img");
    // The image's entrypoint is `capstan`; its args use the replica's environment: the port
    // it is given and the model folder mounted from the registry's version.
    capstan.apply(&format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: {name}\nspec:\n  model:\n    registeredModel: {model}\n    version: 1\n  runtime:\n    type: image\n    image: {image}\n    port: 8000\n    args: [serve, --model, \"$(CAPSTAN_MODEL_DIR)/model.onnx\", --name, \"$(CAPSTAN_MODEL_NAME)\", --listen, \"0.0.0.0:$(PORT)\", --model-version, \"$(CAPSTAN_MODEL_VERSION)\"]\n"
    ));
    let (st, created) = capstan.get(&mdep_path(&name));
    assert_eq!(st, 200, "{created}");
    let uid = created["metadata"]["uid"].as_str().expect("uid").to_string();
    let _cleanup = RemoveContainers(format!("mdep-{uid}"));
    let d = wait_for(&capstan, &mdep_path(&name), "Ready on version 1", |d| {
        d["status"]["phase"] == "Ready" && d["status"]["readyReplicas"] == 1
    });
    assert_eq!(d["metadata"]["uid"].as_str(), Some(uid.as_str()));
    let endpoint = d["status"]["versions"][0]["endpoints"][0].as_str().expect("an endpoint").to_string();
    let port = endpoint.rsplit(':').next().unwrap().to_string();
    assert_ne!(port, "8000", "on the host network each replica gets a port of its own: {d}");

    // The replica is a container of that image, told its port and the model.
    let containers = running_containers_of(&format!("mdep-{uid}"));
    assert_eq!(containers.len(), 1, "one running container for the replica: {containers:?}");
    let inspect = podman(&["inspect", &containers[0]]);
    assert_eq!(inspect.code, 0, "{}", inspect.stderr);
    let info: Value = serde_json::from_str(&inspect.stdout).expect("podman inspect JSON");
    let info = &info[0];
    assert_eq!(
        info["ImageName"].as_str().map(|s| s.trim_start_matches("localhost/")),
        Some(image.trim_start_matches("localhost/")),
        "{info}"
    );
    let env: Vec<&str> = info["Config"]["Env"].as_array().unwrap().iter().filter_map(|e| e.as_str()).collect();
    for want in
        [format!("PORT={port}"), format!("CAPSTAN_MODEL_URI=models:/{model}/1"), "CAPSTAN_MODEL_DIR=/mnt/models".into()]
    {
        assert!(env.contains(&want.as_str()), "{want} in the container's env: {env:?}");
    }
    assert_eq!(info["HostConfig"]["NetworkMode"], "host", "{info}");

    // The real clients, through the Capstan server's /v2/models/{name} route.
    let summary = python(
        &[
            python_script("serving_client.py").to_str().unwrap(),
            "check",
            capstan.url(),
            &name,
            file.to_str().unwrap(),
            "1",
        ],
        &[],
        "tritonclient and kserve through the Capstan server to the image replica",
    );
    assert_eq!(summary["ok"], true, "{summary}");

    // Deleting the deployment stops and removes its container.
    let out = capstan.cli(&["delete", "modeldeployment", &name]);
    assert_eq!(out.code, 0, "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_containers_of(&format!("mdep-{uid}")).is_empty() {
        assert!(Instant::now() < deadline, "the replica's container outlived its deployment\n{}", capstan.log_tail(40));
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn serving_gpus_come_from_the_job_allocation_and_wait_when_taken() {
    require_python_packages();
    let capstan = Capstan::start_with_gpus("4");
    let (model, _) = registered_model(&capstan, "gpuclf");
    let spec = |name: &str| {
        format!(
            "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: {name}\nspec:\n  model:\n    registeredModel: {model}\n    version: 1\n  gpus: 1\n"
        )
    };
    let job = |name: &str, gpus: u32| {
        format!(
            "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: {name}\nspec:\n  runtime: process\n  replicas: 1\n  gpusPerReplica: {gpus}\n  command: [\"sleep\", \"600\"]\n"
        )
    };

    // 1. A serving replica with one GPU: in its status and its CUDA_VISIBLE_DEVICES.
    let served = unique_name("gpu-serve");
    capstan.apply(&spec(&served));
    let d = wait_for(&capstan, &mdep_path(&served), "a ready replica holding a GPU", |d| {
        d["status"]["readyReplicas"] == 1 && serving_gpus(d).len() == 1
    });
    let serving = serving_gpus(&d);
    // The replica's processes (the agent's wrapper and `capstan serve`) see its GPU.
    let pids = procs_with_env(&[("CAPSTAN_MODEL_NAME", served.as_str())]);
    assert!(!pids.is_empty(), "no replica process");
    for pid in pids {
        let env = capstan_e2e::proc_env(pid);
        let cvd = env.iter().find(|(k, _)| k == "CUDA_VISIBLE_DEVICES").map(|(_, v)| v.clone());
        assert_eq!(cvd, Some(serving[0].to_string()), "CUDA_VISIBLE_DEVICES of pid {pid}");
    }
    assert_eq!(condition(&d, "Scheduled").map(|c| c["reason"].clone()), Some(json!("GpusAllocated")), "{d}");

    // 2. A job asking for the three others gets exactly those.
    let big = unique_name("gpu-job");
    capstan.apply(&job(&big, 3));
    let j = wait_for(&capstan, &Capstan::job_path(&big), "the job running on 3 GPUs", |j| {
        j["status"]["replicaStatuses"][0]["gpus"].as_array().is_some_and(|g| g.len() == 3)
    });
    let job_gpus: BTreeSet<u64> =
        j["status"]["replicaStatuses"][0]["gpus"].as_array().unwrap().iter().filter_map(|g| g.as_u64()).collect();
    assert!(!job_gpus.contains(&serving[0]), "the job got the serving GPU {}: {job_gpus:?}", serving[0]);
    assert_eq!(job_gpus.len() + serving.len(), 4);

    // 3. Another job asking for one GPU waits: the serving one is not the scheduler's.
    let small = unique_name("gpu-job-small");
    capstan.apply(&job(&small, 1));
    std::thread::sleep(Duration::from_secs(3));
    let (_, j) = capstan.get(&Capstan::job_path(&small));
    assert!(
        j["status"]["replicaStatuses"][0]["gpus"].as_array().is_none_or(|g| g.is_empty()),
        "a job was given a GPU while all four are held: {j}"
    );
    assert_ne!(j["status"]["phase"], "Running", "{j}");

    // 4. A deployment asking for a GPU when none is free waits, saying why.
    let waiting = unique_name("gpu-wait");
    capstan.apply(&spec(&waiting));
    let d = wait_for(&capstan, &mdep_path(&waiting), "the InsufficientGpus reason", |d| {
        condition(d, "Ready").is_some_and(|c| c["reason"] == "InsufficientGpus")
    });
    let message = condition(&d, "Ready").unwrap()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("0 free of 4 GPUs (3 held by TrainingJobs, 1 by other deployments"),
        "the reason names what holds the GPUs: {message}"
    );
    assert_eq!(d["status"]["phase"], "Pending", "{d}");
    assert_eq!(d["status"]["readyReplicas"], 0, "{d}");
    assert!(serving_gpus(&d).is_empty(), "{d}");
    assert!(procs_with_env(&[("CAPSTAN_MODEL_NAME", waiting.as_str())]).is_empty(), "no replica started");

    // 5. The big job gone, the waiting deployment gets a GPU none of the others holds.
    let out = capstan.cli(&["delete", "trainingjob", &big]);
    assert_eq!(out.code, 0, "{out:?}");
    let d = wait_for(&capstan, &mdep_path(&waiting), "a GPU once the job is gone", |d| {
        d["status"]["readyReplicas"] == 1 && serving_gpus(d).len() == 1
    });
    let got = serving_gpus(&d)[0];
    assert_ne!(got, serving[0], "two deployments share GPU {got}");
    let (_, small_job) = capstan.get(&Capstan::job_path(&small));
    let small_gpus: Vec<u64> = small_job["status"]["replicaStatuses"][0]["gpus"]
        .as_array()
        .map(|g| g.iter().filter_map(|x| x.as_u64()).collect())
        .unwrap_or_default();
    assert!(!small_gpus.contains(&got), "GPU {got} given to both a job and a deployment: {small_job}");
}

//! Which Kubernetes pod uses which GPU of this node (`capstan agent --kubernetes`), from one
//! of three sources, in this order of preference:
//!
//! - [`podresources`]: the kubelet's pod-resources API (gRPC `v1.PodResourcesLister/List` on
//!   the unix socket [`podresources::KUBELET_SOCKET`]): the device ids of resource
//!   `nvidia.com/gpu` the kubelet granted each container (NVIDIA's device plugin names them
//!   by UUID, or by index with `DEVICE_ID_STRATEGY=index`; both are understood). Used
//!   whenever the socket answers, for simulated GPUs too (their UUIDs are `GPU-sim-<node>-<i>`).
//! - The fallback when that socket is absent: NVML's running compute processes, each
//!   process's `/proc/<pid>/cgroup` ([`pod_of_cgroup`]: the kubepods path names the pod UID,
//!   cgroup v1 or v2, systemd or cgroupfs driver) and container id.
//! - Simulated GPUs (`--simulate-gpus`) without the socket have no processes: [`simulate_allocation`] hands the
//!   pods bound to the node that request `nvidia.com/gpu` the first free healthy indices in
//!   creation order, the way a device plugin would, and keeps what it gave until the pod
//!   finishes or goes, across agent restarts too ([`save_sim_allocation`]). Everything it
//!   produces is labelled simulated ([`Source::Simulated`]).
//!
//! Then [`pod_marks`] says which pods sit on an unhealthy GPU and why; the kube adapter
//! (`cli/src/node_marker.rs`) writes that as the pod annotation [`ANNOTATION_POD_UNHEALTHY`],
//! which the Kubernetes controller turns into an eviction of the gang (`GpuUnhealthy`, not
//! counted against backoffLimit).
//!
//! Pure, except [`podresources::list`] (the gRPC call) and [`read_cgroup`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::gpu::GpuInfo;
use crate::health::GpuHealth;
use crate::push::JobRef;
use crate::AgentError;

/// Pod annotation the agent writes on a pod that uses an unhealthy GPU: `GPU <i> (<uuid>):
/// <reason>: <message>`, several joined by `; `.
pub const ANNOTATION_POD_UNHEALTHY: &str = "capstan.dev/gpu-unhealthy";
/// The GPU resource name of NVIDIA's device plugin.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Where an attribution came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The kubelet's pod-resources API.
    PodResources,
    /// NVML's compute processes and their cgroups.
    Cgroup,
    /// The simulated device plugin of simulated GPUs.
    Simulated,
}

/// One container of a pod on this node, as the attribution needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodContainer {
    /// Pod UID.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// The Capstan job replica the pod runs, when it is one of a TrainingJob's pods.
    pub job: Option<JobRef>,
}

/// GPUs of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// The container.
    pub container: PodContainer,
    /// GPU indices on the node.
    pub gpus: Vec<u32>,
    /// Where this came from.
    pub source: Source,
}

/// A pod bound to this node, as the kube adapter read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodePod {
    /// Pod UID.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// creationTimestamp (RFC 3339; sorts in time order).
    pub created: String,
    /// Succeeded or Failed: it holds no devices any more.
    pub finished: bool,
    /// Containers: name and `nvidia.com/gpu` asked for (limit, else request).
    pub containers: Vec<(String, u32)>,
    /// Container ids (without the `containerd://` scheme) to container names.
    pub container_ids: Vec<(String, String)>,
    /// The job replica, for a TrainingJob's pod.
    pub job: Option<JobRef>,
    /// The current value of [`ANNOTATION_POD_UNHEALTHY`], if set.
    pub marked: Option<String>,
}

impl NodePod {
    fn container(&self, name: &str) -> PodContainer {
        PodContainer {
            uid: self.uid.clone(),
            namespace: self.namespace.clone(),
            pod: self.name.clone(),
            container: name.to_string(),
            job: self.job.clone(),
        }
    }
}

/// What the simulated device plugin gave: (pod uid, container) -> GPU indices.
pub type SimAllocation = BTreeMap<(String, String), Vec<u32>>;

/// One grant of the simulated device plugin, as kept on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SimGrant {
    pod_uid: String,
    container: String,
    gpus: Vec<u32>,
}

/// The simulated device plugin's grants kept in `path` (`sim-grants.json` in the agent's
/// data directory; none when the file does not exist), so a restarted agent goes on giving
/// each running container the GPUs it had, as a kubelet's checkpoint does.
pub fn load_sim_allocation(path: &std::path::Path) -> Result<SimAllocation, AgentError> {
    let grants: Vec<SimGrant> = crate::health::load_json(path)?;
    Ok(grants.into_iter().map(|g| ((g.pod_uid, g.container), g.gpus)).collect())
}

/// Keep the simulated device plugin's grants in `path` (atomically).
pub fn save_sim_allocation(path: &std::path::Path, alloc: &SimAllocation) -> Result<(), AgentError> {
    let grants: Vec<SimGrant> = alloc
        .iter()
        .map(|((uid, c), gpus)| SimGrant { pod_uid: uid.clone(), container: c.clone(), gpus: gpus.clone() })
        .collect();
    crate::health::save_json(path, &grants)
}

/// The simulated device plugin: pods that keep running keep their GPUs; pods that finished
/// or went free theirs; every container asking for GPUs that has none yet gets the first
/// free healthy indices, pods in creation order (then namespace, name), containers in
/// order. A container that does not fit gets nothing (a kubelet would reject the pod).
pub fn simulate_allocation(
    previous: &SimAllocation,
    pods: &[NodePod],
    gpus: &[GpuInfo],
    health: &BTreeMap<u32, GpuHealth>,
) -> SimAllocation {
    let live: HashMap<&str, &NodePod> = pods.iter().filter(|p| !p.finished).map(|p| (p.uid.as_str(), p)).collect();
    let mut out: SimAllocation = previous
        .iter()
        .filter(|((uid, c), _)| live.get(uid.as_str()).is_some_and(|p| p.containers.iter().any(|(n, _)| n == c)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut taken: BTreeSet<u32> = out.values().flatten().copied().collect();
    let mut order: Vec<&NodePod> = live.values().copied().collect();
    order.sort_by(|a, b| (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name)));
    for pod in order {
        for (container, n) in pod.containers.iter().filter(|(_, n)| *n > 0) {
            let key = (pod.uid.clone(), container.clone());
            if out.contains_key(&key) {
                continue;
            }
            let free: Vec<u32> = gpus
                .iter()
                .map(|g| g.index)
                .filter(|i| !taken.contains(i) && health.get(i).is_none_or(|h| h.healthy))
                .take(*n as usize)
                .collect();
            if free.len() == *n as usize {
                taken.extend(free.iter().copied());
                out.insert(key, free);
            }
        }
    }
    out
}

/// The attributions of a simulated allocation.
pub fn from_simulated(alloc: &SimAllocation, pods: &[NodePod]) -> Vec<Attribution> {
    alloc
        .iter()
        .filter_map(|((uid, c), gpus)| {
            let pod = pods.iter().find(|p| &p.uid == uid)?;
            Some(Attribution { container: pod.container(c), gpus: gpus.clone(), source: Source::Simulated })
        })
        .collect()
}

/// The GPU index a device id names: a GPU UUID (`GPU-...`, the device plugin's default) or
/// an index (`DEVICE_ID_STRATEGY=index`). MIG devices and unknown ids give None.
pub fn gpu_of_device_id(id: &str, gpus: &[GpuInfo]) -> Option<u32> {
    let id = id.trim();
    if let Some(g) = gpus.iter().find(|g| g.uuid.eq_ignore_ascii_case(id)) {
        return Some(g.index);
    }
    let index: u32 = id.parse().ok()?;
    gpus.iter().find(|g| g.index == index).map(|g| g.index)
}

/// The attributions the kubelet's answer gives, for the pods the kube adapter knows (the
/// answer names pods by namespace and name; a pod it does not know is left out).
pub fn from_pod_resources(
    answer: &podresources::ListPodResourcesResponse,
    pods: &[NodePod],
    gpus: &[GpuInfo],
) -> Vec<Attribution> {
    let mut out = Vec::new();
    for pr in &answer.pod_resources {
        let Some(pod) = pods.iter().find(|p| p.namespace == pr.namespace && p.name == pr.name) else { continue };
        for c in &pr.containers {
            let mut ids: Vec<u32> = c
                .devices
                .iter()
                .filter(|d| d.resource_name == GPU_RESOURCE)
                .flat_map(|d| d.device_ids.iter())
                .filter_map(|id| gpu_of_device_id(id, gpus))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            if !ids.is_empty() {
                out.push(Attribution { container: pod.container(&c.name), gpus: ids, source: Source::PodResources });
            }
        }
    }
    out
}

/// A pod's UID (dashed, as the API writes it) and the container id, read from one process's
/// `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPod {
    /// Pod UID.
    pub uid: String,
    /// Container id (hex), when the path names one.
    pub container_id: Option<String>,
}

fn is_uid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The pod UID of a path segment: `pod<uid>` (cgroupfs driver) or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd driver).
fn uid_of_segment(seg: &str) -> Option<String> {
    let seg = seg.strip_suffix(".slice").unwrap_or(seg);
    let at = seg.rfind("pod")?;
    let before = &seg[..at];
    if !(before.is_empty() || before.ends_with('-')) {
        return None;
    }
    let uid = seg[at + 3..].replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// The container id of the segment after the pod's: `cri-containerd-<id>.scope`,
/// `docker-<id>.scope`, `crio-<id>.scope` (systemd driver) or a bare `<id>` (cgroupfs).
fn container_of_segment(seg: &str) -> Option<String> {
    let seg = seg.strip_suffix(".scope").unwrap_or(seg);
    if seg.starts_with("crio-conmon-") {
        return None;
    }
    let id = seg.rsplit('-').next().unwrap_or(seg);
    (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// The pod a process belongs to, from the text of its `/proc/<pid>/cgroup`: cgroup v2
/// (`0::/kubepods.slice/...`) or v1 (`12:memory:/kubepods/...`), the systemd or the cgroupfs
/// driver. None for a process outside `kubepods`.
pub fn pod_of_cgroup(text: &str) -> Option<CgroupPod> {
    let mut lines: Vec<&str> = text.lines().collect();
    // The unified hierarchy first; every v1 hierarchy names the same pod.
    lines.sort_by_key(|l| !l.starts_with("0::"));
    for line in lines {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if !path.contains("kubepods") {
            continue;
        }
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if let Some((at, uid)) = segs.iter().enumerate().find_map(|(i, s)| uid_of_segment(s).map(|u| (i, u))) {
            let container_id = segs.get(at + 1).and_then(|s| container_of_segment(s));
            return Some(CgroupPod { uid, container_id });
        }
    }
    None
}

/// Read `/proc/<pid>/cgroup` (None: the process is gone or not visible, e.g. without the
/// host's PID namespace).
pub fn read_cgroup(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

/// The attributions of NVML's compute processes (`(gpu index, pid)`), given each pid's
/// cgroup text (`cgroup_of`, [`read_cgroup`] in the agent).
pub fn from_processes(
    processes: &[(u32, u32)],
    cgroup_of: impl Fn(u32) -> Option<String>,
    pods: &[NodePod],
) -> Vec<Attribution> {
    let mut by_container: BTreeMap<(String, String), BTreeSet<u32>> = BTreeMap::new();
    for &(gpu, pid) in processes {
        let Some(cg) = cgroup_of(pid).as_deref().and_then(pod_of_cgroup) else { continue };
        let Some(pod) = pods.iter().find(|p| p.uid == cg.uid) else { continue };
        let container = cg
            .container_id
            .as_deref()
            .and_then(|id| pod.container_ids.iter().find(|(cid, _)| cid == id).map(|(_, n)| n.clone()))
            .unwrap_or_default();
        by_container.entry((pod.uid.clone(), container)).or_default().insert(gpu);
    }
    by_container
        .into_iter()
        .filter_map(|((uid, c), gpus)| {
            let pod = pods.iter().find(|p| p.uid == uid)?;
            Some(Attribution { container: pod.container(&c), gpus: gpus.into_iter().collect(), source: Source::Cgroup })
        })
        .collect()
}

/// Which pods to mark, by pod UID, with the annotation's value: every pod with a container
/// on an unhealthy GPU.
pub fn pod_marks(
    attributions: &[Attribution],
    gpus: &[GpuInfo],
    health: &BTreeMap<u32, GpuHealth>,
) -> BTreeMap<String, String> {
    let mut bad: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for a in attributions {
        for g in &a.gpus {
            if health.get(g).is_some_and(|h| !h.healthy) {
                bad.entry(a.container.uid.clone()).or_default().insert(*g);
            }
        }
    }
    bad.into_iter()
        .map(|(uid, set)| {
            let text = set
                .iter()
                .map(|g| {
                    let h = &health[g];
                    let uuid = gpus.iter().find(|x| x.index == *g).map(|x| x.uuid.as_str()).unwrap_or("?");
                    format!("GPU {g} ({uuid}): {}: {}", h.reason, h.message)
                })
                .collect::<Vec<_>>()
                .join("; ");
            (uid, text)
        })
        .collect()
}

/// The annotation changes that bring the pods to `marks`: `(namespace, name, Some(value))` to
/// set, `(namespace, name, None)` to remove (the GPU's verdict was cleared).
pub fn mark_changes(pods: &[NodePod], marks: &BTreeMap<String, String>) -> Vec<(String, String, Option<String>)> {
    pods.iter()
        .filter_map(|p| {
            let want = marks.get(&p.uid);
            (want != p.marked.as_ref()).then(|| (p.namespace.clone(), p.name.clone(), want.cloned()))
        })
        .collect()
}

/// GPU index -> the containers using it.
pub fn by_gpu(attributions: &[Attribution]) -> BTreeMap<u32, Vec<&Attribution>> {
    let mut out: BTreeMap<u32, Vec<&Attribution>> = BTreeMap::new();
    for a in attributions {
        for g in &a.gpus {
            out.entry(*g).or_default().push(a);
        }
    }
    out
}

/// The kubelet's pod-resources API, v1: hand-written messages (prost derive) for the one call
/// used, `List`, and a thin gRPC client over HTTP/2 on the kubelet's unix socket.
pub mod podresources {
    use std::path::Path;
    use std::time::Duration;

    use bytes::{Buf, BufMut, Bytes, BytesMut};

    use crate::AgentError;

    /// Where the kubelet serves the API.
    pub const KUBELET_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
    /// The method's path.
    pub const LIST_PATH: &str = "/v1.PodResourcesLister/List";
    /// Largest answer accepted (the kubelet's own limit is 16 MiB).
    pub const MAX_MESSAGE: usize = 16 << 20;

    /// `ListPodResourcesRequest` (empty).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListPodResourcesRequest {}

    /// `ListPodResourcesResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListPodResourcesResponse {
        /// Field 1.
        #[prost(message, repeated, tag = "1")]
        pub pod_resources: Vec<PodResources>,
    }

    /// `PodResources`: one pod.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodResources {
        /// Field 1: pod name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Field 2: namespace.
        #[prost(string, tag = "2")]
        pub namespace: String,
        /// Field 3: its containers.
        #[prost(message, repeated, tag = "3")]
        pub containers: Vec<ContainerResources>,
    }

    /// `ContainerResources` (cpu_ids, memory and dynamic resources are skipped).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerResources {
        /// Field 1: container name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Field 2: devices by resource.
        #[prost(message, repeated, tag = "2")]
        pub devices: Vec<ContainerDevices>,
    }

    /// `ContainerDevices` (topology is skipped).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerDevices {
        /// Field 1: resource name, e.g. `nvidia.com/gpu`.
        #[prost(string, tag = "1")]
        pub resource_name: String,
        /// Field 2: device ids.
        #[prost(string, repeated, tag = "2")]
        pub device_ids: Vec<String>,
    }

    /// A gRPC message frame: no compression, 4-byte big-endian length, the message.
    pub fn frame(message: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(5 + message.len());
        b.put_u8(0);
        b.put_u32(message.len() as u32);
        b.put_slice(message);
        b.freeze()
    }

    /// The one message of a unary answer's body.
    pub fn unframe(mut body: &[u8]) -> Result<&[u8], AgentError> {
        let bad = |m: &str| AgentError::PodResources(format!("malformed gRPC answer: {m}"));
        if body.len() < 5 {
            return Err(bad("shorter than a frame header"));
        }
        let compressed = body.get_u8();
        let len = body.get_u32() as usize;
        if compressed != 0 {
            return Err(bad("compressed message (none was offered)"));
        }
        if len > MAX_MESSAGE {
            return Err(bad(&format!("message of {len} bytes, more than {MAX_MESSAGE}")));
        }
        if body.len() < len {
            return Err(bad(&format!("message of {len} bytes but {} in the body", body.len())));
        }
        Ok(&body[..len])
    }

    /// Decode a `List` answer's message.
    pub fn decode(message: &[u8]) -> Result<ListPodResourcesResponse, AgentError> {
        <ListPodResourcesResponse as prost::Message>::decode(message)
            .map_err(|e| AgentError::PodResources(format!("cannot decode ListPodResourcesResponse: {e}")))
    }

    fn status_of(headers: &http::HeaderMap) -> Option<(String, String)> {
        let code = headers.get("grpc-status")?.to_str().ok()?.to_string();
        let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("").to_string();
        Some((code, message))
    }

    /// Call `List` on the socket at `socket` (5 s at most).
    pub async fn list(socket: &Path) -> Result<ListPodResourcesResponse, AgentError> {
        let err = |m: String| AgentError::PodResources(format!("{}: {m}", socket.display()));
        let call = async {
            let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| err(e.to_string()))?;
            let (client, conn) = h2::client::handshake(stream).await.map_err(|e| err(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut client = client.ready().await.map_err(|e| err(e.to_string()))?;
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("http://localhost{LIST_PATH}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .map_err(|e| err(e.to_string()))?;
            let (answer, mut send) = client.send_request(req, false).map_err(|e| err(e.to_string()))?;
            send.send_data(frame(&[]), true).map_err(|e| err(e.to_string()))?;
            let answer = answer.await.map_err(|e| err(e.to_string()))?;
            let (parts, mut body) = answer.into_parts();
            if parts.status != http::StatusCode::OK {
                return Err(err(format!("HTTP status {}", parts.status)));
            }
            // A trailers-only answer carries the status in the headers.
            if let Some((code, message)) = status_of(&parts.headers).filter(|(c, _)| c != "0") {
                return Err(err(format!("gRPC status {code}: {message}")));
            }
            let mut buf = BytesMut::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(|e| err(e.to_string()))?;
                let _ = body.flow_control().release_capacity(chunk.len());
                if buf.len() + chunk.len() > MAX_MESSAGE + 5 {
                    return Err(err(format!("answer larger than {MAX_MESSAGE} bytes")));
                }
                buf.extend_from_slice(&chunk);
            }
            let trailers = body.trailers().await.map_err(|e| err(e.to_string()))?;
            match trailers.as_ref().and_then(status_of).or_else(|| status_of(&parts.headers)) {
                Some((code, _)) if code == "0" => {}
                Some((code, message)) => return Err(err(format!("gRPC status {code}: {message}"))),
                None => return Err(err("no grpc-status in the answer".into())),
            }
            decode(unframe(&buf)?)
        };
        tokio::time::timeout(Duration::from_secs(5), call).await.map_err(|_| err("no answer within 5 s".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::podresources::*;
    use super::*;

    fn gpus(n: u32) -> Vec<GpuInfo> {
        crate::gpu::simulated_gpus(&n.to_string(), "n1").unwrap()
    }

    fn pod(uid: &str, name: &str, created: &str, containers: &[(&str, u32)]) -> NodePod {
        NodePod {
            uid: uid.into(),
            namespace: "ml".into(),
            name: name.into(),
            created: created.into(),
            containers: containers.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            ..Default::default()
        }
    }

    fn bad(message: &str) -> GpuHealth {
        GpuHealth { healthy: false, reason: "XidError".into(), message: message.into(), since_ms: 1 }
    }

    // --- protobuf, written by hand in the test (wire format: tag = field << 3 | type) ---

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn field(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
        varint(out, number << 3 | 2);
        varint(out, payload.len() as u64);
        out.extend_from_slice(payload);
    }

    fn devices(resource: &str, ids: &[&str]) -> Vec<u8> {
        let mut d = Vec::new();
        field(&mut d, 1, resource.as_bytes());
        for id in ids {
            field(&mut d, 2, id.as_bytes());
        }
        // topology { nodes { id: 1 } }: skipped by the decoder.
        field(&mut d, 3, &[0x0a, 0x02, 0x08, 0x01]);
        d
    }

    fn answer() -> Vec<u8> {
        let mut c = Vec::new();
        field(&mut c, 1, b"trainer");
        field(&mut c, 2, &devices("nvidia.com/gpu", &["GPU-sim-n1-3", "GPU-sim-n1-5"]));
        field(&mut c, 2, &devices("example.com/nic", &["mlx5_0"]));
        // cpu_ids = [2, 3], packed: skipped.
        field(&mut c, 3, &[2, 3]);
        let mut side = Vec::new();
        field(&mut side, 1, b"sidecar");
        let mut p = Vec::new();
        field(&mut p, 1, b"llm-1-0");
        field(&mut p, 2, b"ml");
        field(&mut p, 3, &c);
        field(&mut p, 3, &side);
        let mut other = Vec::new();
        field(&mut other, 1, b"foreign");
        field(&mut other, 2, b"kube-system");
        let mut c2 = Vec::new();
        field(&mut c2, 1, b"x");
        field(&mut c2, 2, &devices("nvidia.com/gpu", &["1"]));
        field(&mut other, 3, &c2);
        let mut r = Vec::new();
        field(&mut r, 1, &p);
        field(&mut r, 1, &other);
        r
    }

    #[test]
    fn a_pod_resources_answer_is_decoded_and_attributed() {
        let body = frame(&answer());
        let msg = decode(unframe(&body).unwrap()).unwrap();
        assert_eq!(msg.pod_resources.len(), 2);
        assert_eq!(msg.pod_resources[0].name, "llm-1-0");
        assert_eq!(msg.pod_resources[0].containers[0].devices[0].device_ids, ["GPU-sim-n1-3", "GPU-sim-n1-5"]);
        let pods = vec![pod("u-1", "llm-1-0", "t1", &[("trainer", 2)])];
        let a = from_pod_resources(&msg, &pods, &gpus(8));
        assert_eq!(a.len(), 1, "the unknown pod and the GPU-less containers are left out: {a:?}");
        assert_eq!(a[0].container.container, "trainer");
        assert_eq!(a[0].gpus, [3, 5]);
        assert_eq!(a[0].source, Source::PodResources);
        // Known by index too (DEVICE_ID_STRATEGY=index).
        let pods = vec![pod("u-2", "foreign", "t1", &[("x", 1)])];
        let mut pods2 = pods.clone();
        pods2[0].namespace = "kube-system".into();
        assert_eq!(from_pod_resources(&msg, &pods2, &gpus(8))[0].gpus, [1]);
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        assert!(unframe(&[0, 0, 0]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err(), "compressed");
        assert!(unframe(&[0, 0, 0, 0, 9, 1]).is_err(), "truncated");
        assert!(unframe(&[0, 0xff, 0, 0, 0]).is_err(), "too large");
        assert!(decode(&[0x0a, 0x05, 0x01]).is_err());
        assert_eq!(decode(&[]).unwrap().pod_resources.len(), 0);
        assert!(gpu_of_device_id("MIG-1234", &gpus(2)).is_none());
        assert!(gpu_of_device_id("7", &gpus(2)).is_none());
    }

    #[tokio::test]
    async fn the_list_call_speaks_grpc_over_http2_on_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let body = answer();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(sock).await.unwrap();
            let (req, mut respond) = conn.accept().await.unwrap().unwrap();
            let seen = (
                req.uri().path().to_string(),
                req.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()),
            );
            let mut req_body = req.into_body();
            let mut got = Vec::new();
            while let Some(c) = req_body.data().await {
                got.extend_from_slice(&c.unwrap());
            }
            let answer =
                http::Response::builder().status(200).header("content-type", "application/grpc").body(()).unwrap();
            let mut send = respond.send_response(answer, false).unwrap();
            send.send_data(frame(&body), false).unwrap();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            send.send_trailers(trailers).unwrap();
            // Drive the connection until the client is done.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), async { while conn.accept().await.is_some() {} }).await;
            (seen, got)
        });
        let msg = list(&path).await.unwrap();
        assert_eq!(msg.pod_resources.len(), 2);
        let ((path_seen, ct), req_body) = server.await.unwrap();
        assert_eq!(path_seen, LIST_PATH);
        assert_eq!(ct.as_deref(), Some("application/grpc"));
        assert_eq!(req_body, [0, 0, 0, 0, 0], "an empty request, framed");
        // No socket: a clear error.
        let e = list(&dir.path().join("absent.sock")).await.unwrap_err().to_string();
        assert!(e.contains("absent.sock"), "{e}");
    }

    use std::time::Duration;

    #[test]
    fn cgroup_lines_name_the_pod() {
        let uid = "0d4f1e62-1c3b-4a5c-9c1e-2b8e5d7f9a10";
        let cid = "8a1f0c2d3e4b5a69788796a5b4c3d2e1f0a1b2c3d4e5f60718293a4b5c6d7e8f";
        // cgroup v2, systemd driver (containerd).
        let v2_systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope\n",
            uid.replace('-', "_")
        );
        // cgroup v2, cgroupfs driver.
        let v2_cgroupfs = format!("0::/kubepods/besteffort/pod{uid}/{cid}\n");
        // cgroup v1, cgroupfs driver (docker), guaranteed QoS (no class segment).
        let v1_cgroupfs = format!(
            "12:memory:/kubepods/pod{uid}/{cid}\n11:devices:/kubepods/pod{uid}/{cid}\n1:name=systemd:/kubepods/pod{uid}/{cid}\n"
        );
        // cgroup v1, systemd driver (cri-o), guaranteed QoS.
        let v1_systemd =
            format!("11:cpuset:/kubepods.slice/kubepods-pod{}.slice/crio-{cid}.scope\n0::/\n", uid.replace('-', "_"));
        for text in [&v2_systemd, &v2_cgroupfs, &v1_cgroupfs, &v1_systemd] {
            let p = pod_of_cgroup(text).unwrap_or_else(|| panic!("no pod in {text}"));
            assert_eq!(p.uid, uid, "{text}");
            assert_eq!(p.container_id.as_deref(), Some(cid), "{text}");
        }
        // Not a pod's process.
        assert!(pod_of_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n").is_none());
        assert!(pod_of_cgroup("0::/system.slice/containerd.service\n").is_none());
        assert!(pod_of_cgroup("0::/kubepods.slice/kubepods-burstable.slice\n").is_none());
        assert!(pod_of_cgroup("").is_none());
        // A pod's slice without a container scope: the pod, no container.
        let p = pod_of_cgroup(&format!("0::/kubepods/burstable/pod{uid}\n")).unwrap();
        assert_eq!((p.uid.as_str(), p.container_id), (uid, None));
    }

    #[test]
    fn processes_are_attributed_through_their_cgroups() {
        let uid = "0d4f1e62-1c3b-4a5c-9c1e-2b8e5d7f9a10";
        let cid = "8a1f0c2d3e4b5a69788796a5b4c3d2e1f0a1b2c3d4e5f60718293a4b5c6d7e8f";
        let mut p = pod(uid, "llm-1-0", "t1", &[("trainer", 2)]);
        p.container_ids = vec![(cid.into(), "trainer".into())];
        let cgroups = |pid: u32| match pid {
            100 | 101 => Some(format!("0::/kubepods/burstable/pod{uid}/{cid}\n")),
            200 => Some("0::/user.slice\n".to_string()),
            _ => None,
        };
        let a = from_processes(&[(0, 100), (1, 101), (2, 200), (3, 300)], cgroups, &[p]);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].gpus, [0, 1]);
        assert_eq!(a[0].container.container, "trainer");
        assert_eq!(a[0].source, Source::Cgroup);
    }

    #[test]
    fn the_simulated_grants_survive_a_restart_on_disk_and_a_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("sim-grants.json");
        assert!(load_sim_allocation(&path).unwrap().is_empty(), "no file: no grants");
        let mut alloc = SimAllocation::new();
        alloc.insert(("uid-a".into(), "main".into()), vec![5, 2]);
        alloc.insert(("uid-b".into(), "worker".into()), vec![6]);
        save_sim_allocation(&path, &alloc).unwrap();
        assert_eq!(load_sim_allocation(&path).unwrap(), alloc);
        // What the restarted plugin does with them: running containers keep their GPUs.
        let g = gpus(8);
        let pods = [
            pod("uid-a", "a", "2026-11-28T10:00:00Z", &[("main", 2)]),
            pod("uid-b", "b", "2026-11-28T10:00:01Z", &[("worker", 1)]),
        ];
        let again = simulate_allocation(&load_sim_allocation(&path).unwrap(), &pods, &g, &BTreeMap::new());
        assert_eq!(again, alloc);
        std::fs::write(&path, "{not json").unwrap();
        let err = load_sim_allocation(&path).unwrap_err().to_string();
        assert!(err.contains("sim-grants.json"), "{err}");
    }

    #[test]
    fn the_simulated_device_plugin_hands_out_first_free_healthy_gpus_in_creation_order() {
        let g = gpus(8);
        let mut health = BTreeMap::new();
        let pods = vec![
            pod("b", "second", "2026-11-28T10:00:02Z", &[("c", 2)]),
            pod("a", "first", "2026-11-28T10:00:01Z", &[("c", 4)]),
            pod("z", "cpu-only", "2026-11-28T10:00:00Z", &[("c", 0)]),
        ];
        let alloc = simulate_allocation(&BTreeMap::new(), &pods, &g, &health);
        assert_eq!(alloc[&("a".to_string(), "c".to_string())], [0, 1, 2, 3]);
        assert_eq!(alloc[&("b".to_string(), "c".to_string())], [4, 5]);
        assert_eq!(alloc.len(), 2);
        // Deterministic.
        assert_eq!(simulate_allocation(&BTreeMap::new(), &pods, &g, &health), alloc);

        // GPU 0 turns unhealthy; "first" keeps what it has (the agent marks it), a new pod
        // never gets GPU 0, a too-large one gets nothing.
        health.insert(0, bad("XID 79"));
        let mut pods2 = pods.clone();
        pods2.push(pod("c", "third", "2026-11-28T10:00:03Z", &[("c", 2)]));
        pods2.push(pod("d", "huge", "2026-11-28T10:00:04Z", &[("c", 8)]));
        let alloc2 = simulate_allocation(&alloc, &pods2, &g, &health);
        assert_eq!(alloc2[&("a".to_string(), "c".to_string())], [0, 1, 2, 3]);
        assert_eq!(alloc2[&("c".to_string(), "c".to_string())], [6, 7]);
        assert!(!alloc2.contains_key(&("d".to_string(), "c".to_string())));
        let marks = pod_marks(&from_simulated(&alloc2, &pods2), &g, &health);
        assert_eq!(marks.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(marks["a"], "GPU 0 (GPU-sim-n1-0): XidError: XID 79");

        // "first" is evicted (finished) and comes back as a new pod: the free healthy GPUs.
        pods2[1].finished = true;
        let mut pods3 = pods2.clone();
        pods3.push(pod("e", "first-again", "2026-11-28T10:00:05Z", &[("c", 3)]));
        let alloc3 = simulate_allocation(&alloc2, &pods3, &g, &health);
        assert!(!alloc3.contains_key(&("a".to_string(), "c".to_string())));
        let again = &alloc3[&("e".to_string(), "c".to_string())];
        assert_eq!(again, &[1, 2, 3].to_vec(), "first free healthy, never GPU 0: {again:?}");
        assert!(pod_marks(&from_simulated(&alloc3, &pods3), &g, &health).is_empty());
    }

    proptest::proptest! {
        /// Whatever pods come and go and GPUs fail: no GPU is given twice, a container gets
        /// exactly what it asked for or nothing, a new grant never includes an unhealthy GPU,
        /// and a live pod keeps what it had.
        #[test]
        fn the_simulated_device_plugin_never_double_books(
            steps in proptest::collection::vec(
                (proptest::collection::vec((0u8..12, proptest::bool::ANY), 0..10), proptest::collection::btree_set(0u32..8, 0..3)),
                1..6,
            )
        ) {
            let g = gpus(8);
            let mut alloc = SimAllocation::new();
            for (pods, bad_set) in steps {
                let health: BTreeMap<u32, GpuHealth> = bad_set.iter().map(|i| (*i, bad("x"))).collect();
                let mut list: Vec<NodePod> = Vec::new();
                for (id, finished) in pods {
                    // A pod's request never changes: it follows from its id.
                    let n = u32::from(id % 5);
                    if list.iter().any(|p| p.uid == format!("u{id}")) {
                        continue;
                    }
                    let mut p = pod(&format!("u{id}"), &format!("p{id}"), &format!("t{id:02}"), &[("c", n)]);
                    p.finished = finished;
                    list.push(p);
                }
                let next = simulate_allocation(&alloc, &list, &g, &health);
                let mut seen = BTreeSet::new();
                for ((uid, c), given) in &next {
                    let p = list.iter().find(|p| &p.uid == uid).expect("only known pods");
                    proptest::prop_assert!(!p.finished);
                    let want = p.containers.iter().find(|(n, _)| n == c).unwrap().1;
                    proptest::prop_assert_eq!(given.len(), want as usize);
                    for i in given {
                        proptest::prop_assert!(seen.insert(*i), "GPU {} given twice", i);
                    }
                    match alloc.get(&(uid.clone(), c.clone())) {
                        Some(before) => proptest::prop_assert_eq!(before, given),
                        None => proptest::prop_assert!(given.iter().all(|i| !bad_set.contains(i))),
                    }
                }
                alloc = next;
            }
        }

        /// The cgroup parser takes any text without panicking, and finds a UID only where
        /// a kubepods path names one.
        #[test]
        fn any_cgroup_text_is_parsed_without_panic(text in ".{0,300}") {
            if let Some(p) = pod_of_cgroup(&text) {
                proptest::prop_assert!(text.contains("kubepods"));
                proptest::prop_assert!(is_uid(&p.uid));
            }
        }
    }

    #[test]
    fn marks_are_set_and_removed_as_health_changes() {
        let g = gpus(4);
        let mut p = pod("a", "first", "t", &[("c", 2)]);
        let attributions =
            vec![Attribution { container: p.container("c"), gpus: vec![1, 2], source: Source::Simulated }];
        let mut health = BTreeMap::new();
        health.insert(2, bad("XID 79 (GPU has fallen off the bus)"));
        health.insert(3, bad("XID 48"));
        let marks = pod_marks(&attributions, &g, &health);
        assert_eq!(marks["a"], "GPU 2 (GPU-sim-n1-2): XidError: XID 79 (GPU has fallen off the bus)");
        let changes = mark_changes(std::slice::from_ref(&p), &marks);
        assert_eq!(changes, [("ml".to_string(), "first".to_string(), Some(marks["a"].clone()))]);
        p.marked = Some(marks["a"].clone());
        assert!(mark_changes(std::slice::from_ref(&p), &marks).is_empty(), "already marked");
        // Cleared: the mark goes.
        let changes = mark_changes(std::slice::from_ref(&p), &BTreeMap::new());
        assert_eq!(changes, [("ml".to_string(), "first".to_string(), None)]);
        assert_eq!(by_gpu(&attributions)[&1].len(), 1);
    }
}

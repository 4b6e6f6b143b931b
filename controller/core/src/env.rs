//! The environment every replica gets: the torchrun-style rendezvous variables, the GPUs it
//! was given, and the tracking run it reports to.

use serde::{Deserialize, Serialize};

/// How a replica launches its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LauncherKind {
    /// The command runs once per replica.
    None,
    /// torchrun reads the PET_* variables.
    Torchrun,
    /// DeepSpeed's launcher on replica 0 reads the hostfile.
    Deepspeed,
    /// mpirun on replica 0 reads the hostfile.
    Mpi,
}

/// What the environment is computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaEnvInput {
    /// Job name.
    pub job_name: String,
    /// Replicas in the gang (nodes).
    pub replicas: u32,
    /// This replica's index.
    pub index: u32,
    /// Worker processes per replica.
    pub nproc_per_replica: u32,
    /// Launcher.
    pub launcher: LauncherKind,
    /// Rank-0 address.
    pub master_addr: String,
    /// Rank-0 port.
    pub master_port: u32,
    /// GPU indices given to this replica.
    pub gpus: Vec<u32>,
    /// Tracking server URI, if any.
    pub tracking_uri: Option<String>,
    /// Tracking run id, if any.
    pub run_id: Option<String>,
    /// Path of the hostfile as the replica sees it (deepspeed, mpi).
    pub hostfile: Option<String>,
    /// Checkpoint URI.
    pub checkpoint_uri: Option<String>,
    /// Resume from the latest checkpoint (set on restarts when the job asks for it).
    pub resume: bool,
}

/// Worker processes per replica: the explicit value, else one per GPU, else one.
pub fn nproc(explicit: Option<u32>, gpus_per_replica: u32) -> u32 {
    explicit.unwrap_or(gpus_per_replica.max(1))
}

/// The variables, in a stable order. The user's own `env` comes before these and cannot
/// name them (validation rejects reserved names).
pub fn replica_env(i: &ReplicaEnvInput) -> Vec<(String, String)> {
    let world = i.replicas * i.nproc_per_replica;
    let mut v: Vec<(String, String)> = vec![
        ("MASTER_ADDR".into(), i.master_addr.clone()),
        ("MASTER_PORT".into(), i.master_port.to_string()),
        ("WORLD_SIZE".into(), if i.launcher == LauncherKind::None { i.replicas } else { world }.to_string()),
        ("RANK".into(), i.index.to_string()),
        ("NODE_RANK".into(), i.index.to_string()),
        ("LOCAL_WORLD_SIZE".into(), i.nproc_per_replica.to_string()),
        ("PET_NNODES".into(), i.replicas.to_string()),
        ("PET_NPROC_PER_NODE".into(), i.nproc_per_replica.to_string()),
        ("PET_NODE_RANK".into(), i.index.to_string()),
        ("PET_MASTER_ADDR".into(), i.master_addr.clone()),
        ("PET_MASTER_PORT".into(), i.master_port.to_string()),
        ("CAPSTAN_JOB_NAME".into(), i.job_name.clone()),
        ("CAPSTAN_REPLICA_INDEX".into(), i.index.to_string()),
    ];
    // Always set, so a replica without GPUs does not grab every GPU of the host.
    let devices: Vec<String> = i.gpus.iter().map(|g| g.to_string()).collect();
    v.push(("CUDA_VISIBLE_DEVICES".into(), devices.join(",")));
    if let Some(uri) = &i.tracking_uri {
        v.push(("MLFLOW_TRACKING_URI".into(), uri.clone()));
    }
    if let Some(run) = &i.run_id {
        v.push(("MLFLOW_RUN_ID".into(), run.clone()));
    }
    if let Some(h) = &i.hostfile {
        v.push(("CAPSTAN_HOSTFILE".into(), h.clone()));
        if i.launcher == LauncherKind::Mpi {
            v.push(("OMPI_MCA_orte_default_hostfile".into(), h.clone()));
        }
    }
    if let Some(c) = &i.checkpoint_uri {
        v.push(("CAPSTAN_CHECKPOINT_URI".into(), c.clone()));
        if i.resume {
            v.push(("CAPSTAN_RESUME_FROM".into(), c.clone()));
        }
    }
    v
}

/// A DeepSpeed/MPI hostfile: one `host slots=N` line per replica, rank order.
pub fn hostfile(hosts: &[String], slots: u32) -> String {
    hosts.iter().map(|h| format!("{h} slots={slots}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ReplicaEnvInput {
        ReplicaEnvInput {
            job_name: "j".into(),
            replicas: 2,
            index: 1,
            nproc_per_replica: 4,
            launcher: LauncherKind::Torchrun,
            master_addr: "10.0.0.1".into(),
            master_port: 23456,
            gpus: vec![4, 5, 6, 7],
            tracking_uri: Some("http://127.0.0.1:8080".into()),
            run_id: Some("abc".into()),
            hostfile: None,
            checkpoint_uri: None,
            resume: false,
        }
    }

    fn get<'a>(v: &'a [(String, String)], k: &str) -> &'a str {
        &v.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("{k} missing")).1
    }

    #[test]
    fn torchrun_variables() {
        let v = replica_env(&input());
        assert_eq!(get(&v, "WORLD_SIZE"), "8");
        assert_eq!(get(&v, "RANK"), "1");
        assert_eq!(get(&v, "PET_NNODES"), "2");
        assert_eq!(get(&v, "PET_NPROC_PER_NODE"), "4");
        assert_eq!(get(&v, "PET_MASTER_PORT"), "23456");
        assert_eq!(get(&v, "CUDA_VISIBLE_DEVICES"), "4,5,6,7");
        assert_eq!(get(&v, "MLFLOW_RUN_ID"), "abc");
    }

    #[test]
    fn plain_launcher_world_is_replicas_and_no_gpu_hides_all() {
        let mut i = input();
        i.launcher = LauncherKind::None;
        i.gpus.clear();
        let v = replica_env(&i);
        assert_eq!(get(&v, "WORLD_SIZE"), "2");
        assert_eq!(get(&v, "CUDA_VISIBLE_DEVICES"), "");
    }

    #[test]
    fn every_reserved_name_is_set_or_optional() {
        let v = replica_env(&input());
        for k in [
            "MASTER_ADDR",
            "MASTER_PORT",
            "WORLD_SIZE",
            "RANK",
            "NODE_RANK",
            "LOCAL_WORLD_SIZE",
            "PET_NODE_RANK",
            "PET_MASTER_ADDR",
        ] {
            get(&v, k);
        }
    }

    #[test]
    fn hostfile_lines() {
        assert_eq!(hostfile(&["a".into(), "b".into()], 8), "a slots=8\nb slots=8\n");
    }

    #[test]
    fn nproc_defaults_to_gpus() {
        assert_eq!(nproc(None, 8), 8);
        assert_eq!(nproc(None, 0), 1);
        assert_eq!(nproc(Some(2), 8), 2);
    }
}

//! `batch/v1` Job helpers shared by the tests that run Jobs on each runtime
//! (`jobs.rs` on the process runtime, `docker_runtime.rs` on Docker): create one from
//! YAML, read its finished condition, wait for it to end.

use std::time::Duration;

use serde_json::Value;

use crate::{Daemon, Reply};

/// The Jobs collection of namespace `team`, where these tests put their Jobs.
pub const JOBS: &str = "/apis/batch/v1/namespaces/team/jobs";

/// Creates a Job in `team` from YAML as the admin; fails the test unless 201.
pub fn create(d: &Daemon, yaml: &str) -> Reply {
    let reply = d.post_yaml(JOBS, d.admin(), yaml);
    assert_eq!(reply.status, 201, "{reply}");
    reply
}

/// The Job's finished condition as `(type, reason)`: `Complete` or `Failed`; `None`
/// while it runs.
pub fn condition(job: &Value) -> Option<(String, String)> {
    job["status"]["conditions"].as_array()?.iter().find_map(|c| {
        let kind = c["type"].as_str()?;
        matches!(kind, "Complete" | "Failed")
            .then(|| (kind.to_string(), c["reason"].as_str().unwrap_or("").to_string()))
    })
}

/// Polls Job `name` in `team` until it has a finished condition; returns the Job.
pub fn wait_finished(d: &Daemon, name: &str, timeout: Duration) -> Value {
    d.wait_until(&format!("{JOBS}/{name}"), timeout, |r| {
        condition(&r.body).is_some()
    })
    .body
}

//! Bounded resources: job listing pages (`limit`/`continue`, as Kubernetes pages), and
//! the daemon's tokio task count stays flat while finished Jobs are requeued (one
//! pending deadline per key, not one sleeping task per requeue).

use std::time::Duration;

use hearth_e2e::{spawn_daemon, Daemon};

const JOBS: &str = "/apis/batch/v1/namespaces/team/jobs";

fn job(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{extra_spec}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ['true']
"
    )
}

fn names(r: &hearth_e2e::Reply) -> Vec<String> {
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn job_listing_pages_with_limit_and_continue() {
    let d = spawn_daemon();
    for i in 0..5 {
        assert_eq!(
            d.post_yaml(JOBS, d.admin(), &job(&format!("j{i}"), "")).status,
            201
        );
    }
    let all = d.get(JOBS, d.admin());
    assert_eq!(all.status, 200, "{all}");
    assert!(all.body["metadata"].get("continue").is_none(), "{all}");
    let mut paged = Vec::new();
    let mut path = format!("{JOBS}?limit=2");
    loop {
        let page = d.get(&path, d.admin());
        assert_eq!(page.status, 200, "{page}");
        let items = names(&page);
        assert!(items.len() <= 2, "{page}");
        paged.extend(items);
        match page.body["metadata"]["continue"].as_str() {
            Some(token) => path = format!("{JOBS}?limit=2&continue={token}"),
            None => break,
        }
    }
    assert_eq!(paged, names(&all));
    assert_eq!(paged.len(), 5);

    // As Kubernetes reads it, 0 means no limit; an empty value breaks the integer schema.
    let unlimited = d.get(&format!("{JOBS}?limit=0"), d.admin());
    assert_eq!(unlimited.status, 200, "{unlimited}");
    assert_eq!(
        unlimited.body["items"].as_array().map(Vec::len),
        Some(5),
        "{unlimited}"
    );
    for bad in ["limit=-1", "limit=100001", "limit=x", "limit="] {
        let r = d.get(&format!("{JOBS}?{bad}"), d.admin());
        r.assert_status(400, "BadRequest");
        assert!(r.text.contains("limit"), "{r}");
    }
    let bad = d.get(&format!("{JOBS}?limit=2&continue=bogus!"), d.admin());
    bad.assert_status(400, "BadRequest");
    assert!(bad.text.contains("continue"), "{bad}");
}

fn alive_tasks(d: &Daemon) -> u64 {
    let text = d.get("/metrics", d.admin()).text;
    text.lines()
        .find(|l| l.starts_with("hearth_tokio_alive_tasks{runtime=\"core\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no hearth_tokio_alive_tasks for core in:\n{text}"))
}

/// A finished Job with a one-day TTL is requeued on every resync and by every event;
/// each requeue used to be a task sleeping for a day.
#[test]
fn requeues_of_finished_jobs_do_not_accumulate_tasks() {
    let d = spawn_daemon();
    for i in 0..10 {
        let r = d.post_yaml(
            JOBS,
            d.admin(),
            &job(&format!("ttl{i}"), "  ttlSecondsAfterFinished: 86400"),
        );
        assert_eq!(r.status, 201, "{r}");
    }
    for i in 0..10 {
        d.wait_until(&format!("{JOBS}/ttl{i}"), Duration::from_secs(30), |r| {
            r.body["status"]["succeeded"] == 1
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let settled = alive_tasks(&d);
    // Every change to a job queues it again: 20 label edits per job.
    for round in 0..20 {
        for i in 0..10 {
            let patch = serde_json::json!({"metadata": {"labels": {"round": round.to_string()}}});
            let r = d.patch(&format!("{JOBS}/ttl{i}"), d.admin(), &patch);
            assert_eq!(r.status, 200, "{r}");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = alive_tasks(&d);
    assert!(
        after <= settled + 3,
        "tokio tasks grew from {settled} to {after} after 200 requeues"
    );
}

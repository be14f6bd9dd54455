//! Deleting a pipeline run leaves nothing behind: its running steps are stopped —
//! also when no driver is live, as after a crash between the delete and the stop — and
//! its step directories and artifacts are removed; 100 create+DELETE pairs in quick
//! succession leave no step process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_e2e::{spawn_daemon, Daemon};
use serde_json::{json, Value};

/// One step that records its pid in `dir`, writes an output artifact, then sleeps.
fn sleeper(dir: &Path) -> Value {
    json!({
        "pipelineInfo": {"name": "sleeper"},
        "schemaVersion": "2.1.0",
        "sdkVersion": "kfp-2.17.0",
        "components": {"comp-sleep": {
            "executorLabel": "exec-sleep",
            "outputDefinitions": {"artifacts": {"out": {"artifactType": {
                "schemaTitle": "system.Artifact", "schemaVersion": "0.0.1"}}}},
        }},
        "deploymentSpec": {"executors": {"exec-sleep": {"container": {
            "image": "alpine:3.23",
            "command": ["sh", "-c", "echo x > \"$1\"; echo $$ > \"$0/$$\"; exec sleep 300",
                        dir.display().to_string(),
                        "{{$.outputs.artifacts['out'].path}}"],
        }}}},
        "root": {"dag": {"tasks": {"sleep": {
            "taskInfo": {"name": "sleep"},
            "componentRef": {"name": "comp-sleep"},
        }}}},
    })
}

/// A directory steps can write whatever user they run as.
fn pid_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("hearth-pids-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn pids(dir: &Path) -> Vec<u32> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// Alive and not a zombie waiting for its parent.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[track_caller]
fn wait_for(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_run(d: &Daemon, token: &str, dir: &Path) -> String {
    let r = d.post_json(
        "/apis/v2beta1/runs",
        Some(token),
        &json!({"display_name": "sleeper", "pipeline_spec": sleeper(dir)}),
    );
    assert_eq!(r.status, 200, "{r}");
    r.body["run_id"].as_str().unwrap().to_string()
}

fn run_files(d: &Daemon, id: &str) -> [PathBuf; 2] {
    [
        d.data_dir.join("pipelines").join("runs").join(id),
        d.data_dir.join("artifacts").join("default").join(id),
    ]
}

#[test]
fn deleting_a_run_stops_its_step_and_removes_its_files() {
    let d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let dir = pid_dir();
    let id = start_run(&d, &token, dir.path());
    wait_for("the step to start", Duration::from_secs(20), || {
        !pids(dir.path()).is_empty()
    });
    let pid = pids(dir.path())[0];
    assert!(alive(pid));
    for f in run_files(&d, &id) {
        assert!(f.exists(), "{} missing while the run runs", f.display());
    }
    let r = d.delete(&format!("/apis/v2beta1/runs/{id}"), Some(&token));
    assert_eq!(r.status, 200, "{r}");
    wait_for("the step to be stopped", Duration::from_secs(15), || !alive(pid));
    for f in run_files(&d, &id) {
        wait_for(
            &format!("{} to be removed", f.display()),
            Duration::from_secs(15),
            || !f.exists(),
        );
    }
    assert_eq!(
        d.get(&format!("/apis/v2beta1/runs/{id}"), Some(&token)).status,
        404
    );
}

#[test]
fn a_run_deleted_while_no_driver_is_live_has_its_step_stopped_after_restart() {
    let mut d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let dir = pid_dir();
    let id = start_run(&d, &token, dir.path());
    wait_for("the step to start", Duration::from_secs(20), || {
        !pids(dir.path()).is_empty()
    });
    let pid = pids(dir.path())[0];
    // The daemon dies after the run's row went and before anything stopped its step.
    d.kill9();
    let db = rusqlite::Connection::open(d.data_dir.join("hearth.db")).unwrap();
    let n = db
        .execute("DELETE FROM resources WHERE kind = 'KfpRun' AND name = ?1", [&id])
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    assert!(
        alive(pid),
        "the step must outlive the daemon's crash for this test"
    );
    d.restart();
    wait_for("the orphaned step to be stopped", Duration::from_secs(20), || {
        !alive(pid)
    });
    for f in run_files(&d, &id) {
        wait_for(
            &format!("{} to be removed", f.display()),
            Duration::from_secs(15),
            || !f.exists(),
        );
    }
}

// The pipelines controller asks the scheduler to stop every step of each deleted run,
// and asks again every 2 s while one has not ended; on failure the message gives the
// steps' phases and the daemon's warnings.
#[test]
fn a_hundred_create_delete_pairs_leave_no_step_running() {
    let d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let dir = pid_dir();
    let mut ids = Vec::new();
    for i in 0..100 {
        let id = start_run(&d, &token, dir.path());
        // Some are deleted at once, some once their step may be starting.
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(150));
        }
        let r = d.delete(&format!("/apis/v2beta1/runs/{id}"), Some(&token));
        assert_eq!(r.status, 200, "{r}");
        ids.push(id);
    }
    let running = || -> Vec<u32> { pids(dir.path()).into_iter().filter(|p| alive(*p)).collect() };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !running().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // A step launched late (a stop lost while it was starting) would show up now.
    std::thread::sleep(Duration::from_secs(3));
    let left = running();
    if !left.is_empty() {
        let db = rusqlite::Connection::open(d.data_dir.join("hearth.db")).unwrap();
        let mut st = db
            .prepare("SELECT phase, count(*) FROM workloads GROUP BY phase")
            .unwrap();
        let phases: Vec<(String, i64)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let logs = d.logs();
        let warnings: Vec<&str> = logs
            .lines()
            .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && !l.contains("writing run status"))
            .take(20)
            .collect();
        panic!(
            "steps {left:?} still run after their runs were deleted; workloads by phase: {phases:?}; \
             daemon warnings: {warnings:#?}"
        );
    }
    for id in &ids {
        for f in run_files(&d, id) {
            wait_for(
                &format!("{} to be removed", f.display()),
                Duration::from_secs(20),
                || !f.exists(),
            );
        }
    }
    let r = d.get("/apis/v2beta1/runs", Some(&token));
    assert_eq!(r.body["total_size"], 0, "{r}");
}

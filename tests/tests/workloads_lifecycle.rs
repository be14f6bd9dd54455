//! Workloads never outlive their owner: a deleted Job leaves no process (a `setsid`
//! or double-forked descendant included) and holds no GPU, a stop while a workload
//! is starting is honoured, and a daemon that dies between spawning a shim and hearing
//! from it runs the workload exactly once after its restart.

use std::path::Path;
use std::time::{Duration, Instant};

use hearth_e2e::{spawn_daemon_with, Daemon, Options};
use serde_json::{json, Value};

const JOBS: &str = "/apis/batch/v1/namespaces/team/jobs";
const GPU: &str = "        resources:\n          limits:\n            nvidia.com/gpu: 1";

/// A Job running `sh -c script`, with `LIFECYCLE_MARKER=marker` in its environment so
/// that every process of its tree can be found in `/proc`.
fn job_yaml(name: &str, script: &str, marker: &str, container_extra: &str) -> String {
    let script = script.replace('\'', "''");
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: ['sh', '-c', '{script}']
        env:
        - name: LIFECYCLE_MARKER
          value: '{marker}'
{container_extra}
"
    )
}

fn options(config: &str) -> Options {
    Options::default().config(&format!("[jobs]\nbackoff_base_seconds = 0.1\n{config}"))
}

fn daemon(config: &str) -> Daemon {
    spawn_daemon_with(options(config))
}

fn create(d: &Daemon, yaml: &str) {
    let reply = d.post_yaml(JOBS, d.admin(), yaml);
    assert_eq!(reply.status, 201, "{reply}");
}

fn delete(d: &Daemon, name: &str) {
    let reply = d.delete(&format!("{JOBS}/{name}"), d.admin());
    assert!(matches!(reply.status, 200 | 202), "{reply}");
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("X");
    !matches!(state, "X" | "Z")
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes with `LIFECYCLE_MARKER=marker` in their environment.
fn marked(marker: &str) -> Vec<i32> {
    let needle = format!("LIFECYCLE_MARKER={marker}").into_bytes();
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == needle.as_slice()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Live `hearth shim` processes working in `data_dir`.
fn shims_in(data_dir: &Path) -> Vec<i32> {
    let dir = data_dir.to_string_lossy().into_owned();
    all_pids()
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("shim") && cmdline.contains(&dir)
        })
        .filter(|pid| alive(*pid))
        .collect()
}

fn read_pids(path: &Path, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.len() >= n {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "the job recorded {pids:?}, not {n} pids"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_gone(d: &Daemon, name: &str) {
    d.wait_until(&format!("{JOBS}/{name}"), Duration::from_secs(20), |r| {
        r.status == 404
    });
}

/// Nothing holds a GPU, CPU or memory, and nothing is starting or running.
fn assert_nothing_held(d: &Daemon) {
    let queue = d.get("/hearth/v1/queue", d.admin());
    assert_eq!(queue.status, 200, "{queue}");
    assert_eq!(queue.body["gpus_in_use"], 0, "{queue}");
    assert_eq!(queue.body["running"], 0, "{queue}");
    assert_eq!(queue.body["items"], Value::Array(Vec::new()), "{queue}");
}

#[test]
fn a_hundred_jobs_created_and_deleted_leave_no_process_and_no_gpu() {
    let d = daemon("[gpu]\nsimulate = 2\n");
    let marker = unique("churn");
    let names: Vec<String> = (0..100).map(|i| format!("churn-{i}")).collect();
    // Four clients at once, each creating a Job and deleting it straight away, so that
    // deletes land while Jobs are queued, starting and running.
    std::thread::scope(|scope| {
        for chunk in names.chunks(25) {
            let (d, marker) = (&d, &marker);
            scope.spawn(move || {
                for name in chunk {
                    let script = format!("echo {name}; sleep 300; : {marker}");
                    create(d, &job_yaml(name, &script, marker, GPU));
                    delete(d, name);
                }
            });
        }
    });
    for name in &names {
        wait_gone(&d, name);
    }
    // Every Job has answered 404: none of their processes may be left, at once.
    let left = marked(&marker);
    assert!(left.is_empty(), "processes of deleted Jobs still run: {left:?}");
    assert_nothing_held(&d);
    let shims = shims_in(&d.data_dir);
    assert!(shims.is_empty(), "shims of deleted Jobs still run: {shims:?}");
}

#[test]
fn deleting_a_job_kills_setsid_and_double_forked_descendants() {
    let d = daemon("");
    let marker = unique("tree");
    let pids = d.data_dir.join("pids");
    let p = pids.display();
    // One descendant in a session of its own (setsid), one whose parent exits at once
    // (a double fork), one plain background child.
    let script = format!(
        "setsid sh -c 'sleep 300 & echo $! >> {p}; wait' & \
         sh -c '(sleep 300 & echo $! >> {p}) &'; \
         sleep 300 & echo $! >> {p}; wait"
    );
    create(&d, &job_yaml("tree", &script, &marker, ""));
    let recorded = read_pids(&pids, 3);
    assert!(recorded.iter().all(|p| alive(*p)), "{recorded:?}");
    delete(&d, "tree");
    wait_gone(&d, "tree");
    let survivors: Vec<_> = recorded.iter().filter(|p| alive(**p)).collect();
    assert!(
        survivors.is_empty(),
        "alive after the Job answered 404: {survivors:?}"
    );
    let left = marked(&marker);
    assert!(left.is_empty(), "processes of the deleted Job: {left:?}");
    assert_nothing_held(&d);
}

#[test]
fn deleting_a_job_running_setsid_kills_the_grandchild() {
    // The case: `setsid sh -c "sleep 300 & wait"`; the sleep used to live on
    // with parent pid 1.
    let d = daemon("");
    let marker = unique("setsid");
    let pids = d.data_dir.join("pids");
    let script = format!("setsid sh -c 'sleep 300 & echo $! >> {}; wait'", pids.display());
    create(&d, &job_yaml("setsid", &script, &marker, ""));
    let recorded = read_pids(&pids, 1);
    delete(&d, "setsid");
    wait_gone(&d, "setsid");
    let survivors: Vec<_> = recorded.iter().filter(|p| alive(**p)).collect();
    assert!(
        survivors.is_empty(),
        "alive after the Job answered 404: {survivors:?}"
    );
    assert!(marked(&marker).is_empty());
}

#[test]
fn a_main_command_that_ends_takes_its_escaped_descendants_with_it() {
    // The main command exits while a grandchild in a session of its own goes on: the
    // Job completes and, as when a pod's main process ends, nothing of it is left.
    let d = daemon("");
    let marker = unique("escape");
    let pids = d.data_dir.join("pids");
    let script = format!(
        "setsid sh -c 'sleep 300 & echo $! >> {}; wait' & sleep 0.3",
        pids.display()
    );
    create(&d, &job_yaml("escape", &script, &marker, ""));
    let recorded = read_pids(&pids, 1);
    d.wait_until(&format!("{JOBS}/escape"), Duration::from_secs(10), |r| {
        r.body["status"]["succeeded"] == 1
    });
    let left = marked(&marker);
    assert!(
        left.is_empty(),
        "processes of a completed Job: {left:?} (recorded {recorded:?})"
    );
}

#[test]
fn a_job_deleted_while_its_workload_is_starting_never_runs() {
    // The shim waits 2 s before it claims the workload: the delete lands while the
    // workload is `Starting`.
    let d = spawn_daemon_with(options("[gpu]\nsimulate = 1\n").env("HEARTH_FAULT_INJECT", "shim-slow-claim"));
    let marker = unique("starting");
    let ran = d.data_dir.join("ran");
    let script = format!("echo ran >> {}; sleep 300", ran.display());
    create(&d, &job_yaml("early", &script, &marker, GPU));
    d.wait_until("/hearth/v1/queue", Duration::from_secs(10), |r| {
        r.body["items"][0]["phase"] == "Starting"
    });
    delete(&d, "early");
    wait_gone(&d, "early");
    assert_nothing_held(&d);
    // Past the shim's claim: the stop was honoured, nothing ever ran.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shims_in(&d.data_dir).is_empty() {
        assert!(Instant::now() < deadline, "the shim did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!ran.exists(), "a Job deleted while starting ran its command");
    assert!(marked(&marker).is_empty());
    // The GPU is free for the next Job.
    create(&d, &job_yaml("next", "echo next", &marker, GPU));
    d.wait_until(&format!("{JOBS}/next"), Duration::from_secs(20), |r| {
        r.body["status"]["succeeded"] == 1
    });
}

#[test]
fn a_daemon_killed_between_shim_spawn_and_its_report_runs_the_workload_once() {
    let data = tempfile::Builder::new()
        .prefix("hearth-e2e-fault-")
        .tempdir()
        .expect("temp data dir");
    let runs = data.path().join("runs");
    let script = format!("echo run >> {}; sleep 1", runs.display());
    let marker = unique("fault");
    let mut first = spawn_daemon_with(
        options("")
            .data_dir(data.path())
            .env("HEARTH_FAULT_INJECT", "after-shim-spawn,shim-slow-claim"),
    );
    // The daemon kills itself as soon as it has spawned the shim, maybe before it
    // answers.
    let _ = first
        .client
        .post(first.url(JOBS))
        .bearer_auth(&first.admin_token)
        .header("content-type", "application/yaml")
        .body(job_yaml("once", &script, &marker, ""))
        .send();
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.is_running() {
        assert!(
            Instant::now() < deadline,
            "the fault hook did not stop the daemon"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        first.logs().contains("test hook HEARTH_FAULT_INJECT"),
        "{}",
        first.logs()
    );
    // The orphaned shim has not claimed the workload yet when the daemon comes back.
    let d = spawn_daemon_with(options("").data_dir(data.path()));
    d.wait_until(&format!("{JOBS}/once"), Duration::from_secs(20), |r| {
        r.body["status"]["succeeded"] == 1
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shims_in(data.path()).is_empty() {
        assert!(Instant::now() < deadline, "shims did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap_or_default(),
        "run\n",
        "the workload ran exactly once"
    );
    let job = d.get(&format!("{JOBS}/once"), d.admin()).body;
    assert_eq!(job["status"]["hearth"]["attempts"], 1, "{job}");
    drop(first);
}

#[test]
fn running_workloads_of_a_deleted_owner_are_stopped_and_a_bad_row_does_not_end_the_pass() {
    let mut d = daemon("[workloads]\ngc_interval_seconds = 1");
    let marker = unique("orphan");
    let pids = d.data_dir.join("pids");
    let script = format!("sleep 300 & echo $! >> {}; wait", pids.display());
    create(&d, &job_yaml("orphan", &script, &marker, ""));
    let recorded = read_pids(&pids, 1);
    let job = d
        .wait_until(&format!("{JOBS}/orphan"), Duration::from_secs(10), |r| {
            r.body["status"]["ready"] == 1
        })
        .body;
    let uid = job["metadata"]["uid"].as_str().unwrap().to_string();
    // While the daemon is down its owner vanishes (as a pipeline run deleted without a
    // live driver did), and a row the daemon cannot read comes first in the queue.
    d.kill9();
    {
        let db = rusqlite::Connection::open(d.data_dir.join("hearth.db")).unwrap();
        db.execute("DELETE FROM resources WHERE uid = ?1", [&uid])
            .unwrap();
        db.execute(
            "INSERT INTO workloads (id, owner_uid, owner_kind, namespace, owner_name, priority, seq, phase,
                                    spec, cpu_millis, memory_bytes, gpu_count, created_at)
             VALUES ('unreadable', 'gone', 'Job', 'team', 'gone', 1, -1, 'Succeeded', '{not json', 0, 0, 0,
                     '2026-01-01T00:00:00Z')",
            [],
        )
        .unwrap();
    }
    d.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while recorded.iter().any(|p| alive(*p)) || !marked(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the workload of a deleted owner still runs: {:?}\n{}",
            marked(&marker),
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stopped, then removed with its directory on a later pass.
    let workloads = d.data_dir.join("workloads");
    while std::fs::read_dir(&workloads).map(|e| e.count()).unwrap_or(0) > 0 {
        assert!(
            Instant::now() < deadline,
            "the workload was not removed\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_nothing_held(&d);
    d.wait_logs_containing(&[
        "collecting a workload of a deleted owner",
        "stopping workloads of deleted owners",
        "removed ended workloads of deleted owners",
    ]);
}

#[test]
fn a_shim_killed_with_sigkill_leaves_nothing_behind() {
    let d = daemon("");
    let marker = unique("lost");
    let pids = d.data_dir.join("pids");
    let p = pids.display();
    let script =
        format!("setsid sh -c 'sleep 300 & echo $! >> {p}; wait' & sleep 300 & echo $! >> {p}; wait");
    create(&d, &job_yaml("lost", &script, &marker, ""));
    let recorded = read_pids(&pids, 2);
    let shims = shims_in(&d.data_dir);
    assert_eq!(shims.len(), 1, "{shims:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Recorded only once what the shim left is gone.
    let job = d
        .wait_until(&format!("{JOBS}/lost"), Duration::from_secs(15), |r| {
            r.body["status"]["failed"] == 1
        })
        .body;
    assert_eq!(job["status"]["hearth"]["lastExit"]["reason"], "Lost", "{job}");
    let survivors: Vec<_> = recorded.iter().filter(|p| alive(**p)).collect();
    assert!(survivors.is_empty(), "left by a killed shim: {survivors:?}");
    assert!(marked(&marker).is_empty());
    assert_nothing_held(&d);
}

/// A one-step KFP pipeline whose step asks for a GPU and sleeps, marked like the Jobs.
fn sleeping_pipeline(marker: &str) -> Value {
    json!({
        "pipelineInfo": {"name": "churn"},
        "schemaVersion": "2.1.0",
        "sdkVersion": "kfp-2.17.0",
        "components": {"comp-step": {"executorLabel": "exec-step"}},
        "deploymentSpec": {"executors": {"exec-step": {"container": {
            "image": "alpine:3.23",
            "command": ["sh", "-c", "sleep 300"],
            "env": [{"name": "LIFECYCLE_MARKER", "value": marker}],
            "resources": {"accelerator": {"resourceType": "nvidia.com/gpu", "resourceCount": "1"}},
        }}}},
        "root": {"dag": {"tasks": {"step": {
            "taskInfo": {"name": "step"},
            "componentRef": {"name": "comp-step"},
        }}}},
    })
}

#[test]
fn a_hundred_pipeline_runs_created_and_deleted_leave_no_process_and_no_gpu() {
    let d = daemon("[gpu]\nsimulate = 2\n[workloads]\ngc_interval_seconds = 1\n");
    let marker = unique("runs");
    let spec = sleeping_pipeline(&marker);
    let pair = |d: &Daemon| {
        let body = json!({"display_name": "churn", "pipeline_spec": spec});
        let run = d.post_json("/apis/v2beta1/runs", d.admin(), &body);
        assert_eq!(run.status, 200, "{run}");
        let id = run.body["run_id"].as_str().unwrap().to_string();
        let gone = d.delete(&format!("/apis/v2beta1/runs/{id}"), d.admin());
        assert_eq!(gone.status, 200, "{gone}");
    };
    // The first run creates the namespace's Default experiment; concurrent first runs
    // race on it (a 409), which is not what this test is about.
    pair(&d);
    std::thread::scope(|scope| {
        for _ in 0..3 {
            let (d, pair) = (&d, &pair);
            scope.spawn(move || (0..33).for_each(|_| pair(d)));
        }
    });
    // A deleted run answers 404 at once and its steps are stopped after: they must all
    // go, and with them every claim on a GPU.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = marked(&marker);
        let queue = d.get("/hearth/v1/queue", d.admin());
        let idle = queue.body["items"] == Value::Array(Vec::new());
        if left.is_empty() && idle && shims_in(&d.data_dir).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "steps of deleted runs still run: {left:?}; queue: {queue}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_nothing_held(&d);
}

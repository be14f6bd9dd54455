//! Jobs end to end: the real daemon runs `batch/v1` Jobs as host processes under its
//! shim, through the GPU queue.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use hearth_e2e::jobs::{condition, create, wait_finished, JOBS};
use hearth_e2e::{spawn_daemon_with, Daemon, Options};

const JOB_EXTRAS: &str = "/hearth/v1/namespaces/team/jobs";

fn job_yaml(name: &str, script: &str, extra_spec: &str, container_extra: &str) -> String {
    let script = script.replace('\'', "''");
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
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: ['sh', '-c', '{script}']
{container_extra}
"
    )
}

fn daemon(config: &str) -> Daemon {
    spawn_daemon_with(Options::default().config(&format!("[jobs]\nbackoff_base_seconds = 0.1\n{config}")))
}

fn pid_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("X");
    !matches!(state, "X" | "Z")
}

#[test]
fn a_job_runs_and_its_log_streams_while_it_runs() {
    let d = daemon("");
    create(
        &d,
        &job_yaml(
            "ticker",
            "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.3; done",
            "",
            "",
        ),
    );
    d.wait_until(&format!("{JOBS}/ticker"), Duration::from_secs(10), |r| {
        r.body["status"]["ready"] == 1
    });

    let mut response = d
        .client
        .get(d.url(&format!("{JOB_EXTRAS}/ticker/logs?follow=true")))
        .bearer_auth(&d.admin_token)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut first = [0u8; 64];
    let n = response.read(&mut first).unwrap();
    let early = String::from_utf8_lossy(&first[..n]).to_string();
    assert!(early.contains("tick 1"), "{early:?}");
    let job = d.get(&format!("{JOBS}/ticker"), d.admin()).body;
    assert!(
        condition(&job).is_none(),
        "the first output arrived while the job still ran: {job}"
    );
    let mut rest = String::new();
    response.read_to_string(&mut rest).unwrap();
    let whole = early + &rest;
    for i in 1..=6 {
        assert!(whole.contains(&format!("tick {i}\n")), "{whole:?}");
    }

    let job = wait_finished(&d, "ticker", Duration::from_secs(10));
    assert_eq!(
        condition(&job),
        Some(("Complete".into(), "CompletionsReached".into())),
        "{job}"
    );
    assert_eq!(job["status"]["succeeded"], 1);
    assert_eq!(job["status"]["active"], 0);
    assert!(job["status"]["startTime"].is_string() && job["status"]["completionTime"].is_string());
    let tail = d.get(&format!("{JOB_EXTRAS}/ticker/logs?tail=2"), d.admin());
    assert_eq!(tail.text, "tick 5\ntick 6\n");
}

#[test]
fn exit_code_and_failure_reason_are_reported() {
    let d = daemon("");
    create(
        &d,
        &job_yaml("fails", "echo about to fail >&2; exit 7", "  backoffLimit: 0", ""),
    );
    let job = wait_finished(&d, "fails", Duration::from_secs(10));
    assert_eq!(
        condition(&job),
        Some(("Failed".into(), "BackoffLimitExceeded".into())),
        "{job}"
    );
    assert_eq!(job["status"]["failed"], 1);
    assert_eq!(job["status"]["hearth"]["lastExit"]["exitCode"], 7, "{job}");
    assert_eq!(job["status"]["hearth"]["lastExit"]["reason"], "Error");
    let logs = d.get(&format!("{JOB_EXTRAS}/fails/logs"), d.admin());
    assert_eq!(logs.text, "about to fail\n", "stderr is in the log");
    let events = d.get(&format!("{JOB_EXTRAS}/fails/events"), d.admin()).body;
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "BackoffLimitExceeded"),
        "{events}"
    );
}

#[test]
fn backoff_limit_retries_until_success() {
    let d = daemon("");
    let counter = d.data_dir.join("attempts");
    let script = format!(
        "echo x >> {c}; n=$(wc -l < {c}); echo attempt $n; [ $n -ge 3 ]",
        c = counter.display()
    );
    create(&d, &job_yaml("flaky", &script, "  backoffLimit: 3", ""));
    let job = wait_finished(&d, "flaky", Duration::from_secs(20));
    assert_eq!(condition(&job).map(|c| c.0), Some("Complete".into()), "{job}");
    assert_eq!(job["status"]["failed"], 2, "{job}");
    assert_eq!(job["status"]["succeeded"], 1);
    assert_eq!(job["status"]["hearth"]["attempts"], 3);
    assert_eq!(std::fs::read_to_string(&counter).unwrap().lines().count(), 3);
    let first = d.get(&format!("{JOB_EXTRAS}/flaky/logs?attempt=0"), d.admin());
    assert_eq!(first.text, "attempt 1\n");

    create(&d, &job_yaml("hopeless", "exit 1", "  backoffLimit: 2", ""));
    let job = wait_finished(&d, "hopeless", Duration::from_secs(20));
    assert_eq!(
        condition(&job),
        Some(("Failed".into(), "BackoffLimitExceeded".into()))
    );
    assert_eq!(
        job["status"]["failed"], 3,
        "backoffLimit 2 means three attempts: {job}"
    );
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
        assert!(Instant::now() < deadline, "the job did not record {n} pids");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn deleting_a_job_kills_its_whole_process_tree() {
    let d = daemon("");
    let pids = d.data_dir.join("pids");
    // Two grandchildren in the job's process group, and one that escapes it with setsid.
    let script = format!(
        "echo $$ >> {p}; sleep 300 & echo $! >> {p}; (sleep 300 & echo $! >> {p}; wait) & setsid sh -c \"echo \\$\\$ >> {p}; exec sleep 300\" & wait",
        p = pids.display()
    );
    create(&d, &job_yaml("tree", &script, "", ""));
    let recorded = read_pids(&pids, 4);
    assert!(recorded.iter().all(|p| pid_alive(*p)), "{recorded:?}");
    let reply = d.delete(&format!("{JOBS}/tree"), d.admin());
    assert_eq!(reply.status, 200, "{reply}");
    d.wait_until(&format!("{JOBS}/tree"), Duration::from_secs(10), |r| {
        r.status == 404
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while recorded.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors: Vec<_> = recorded.iter().filter(|p| pid_alive(**p)).collect();
    assert!(survivors.is_empty(), "still alive after delete: {survivors:?}");
}

#[test]
fn active_deadline_kills_the_job() {
    let d = daemon("");
    let started = Instant::now();
    create(
        &d,
        &job_yaml(
            "slow",
            "echo start; sleep 60",
            "  activeDeadlineSeconds: 1\n  backoffLimit: 5",
            "",
        ),
    );
    let job = wait_finished(&d, "slow", Duration::from_secs(15));
    assert_eq!(
        condition(&job),
        Some(("Failed".into(), "DeadlineExceeded".into())),
        "{job}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        job["status"]["hearth"]["attempts"], 1,
        "a deadline is not retried: {job}"
    );
}

#[test]
fn a_daemon_kill9_mid_job_loses_nothing_and_runs_nothing_twice() {
    let mut d = daemon("");
    let runs = d.data_dir.join("runs");
    let script = format!(
        "echo run >> {}; for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.25; done",
        runs.display()
    );
    create(&d, &job_yaml("survivor", &script, "  backoffLimit: 0", ""));
    d.wait_until(&format!("{JOBS}/survivor"), Duration::from_secs(10), |r| {
        r.body["status"]["ready"] == 1
    });
    std::thread::sleep(Duration::from_millis(400));
    d.kill9();
    std::thread::sleep(Duration::from_millis(300));
    d.restart();
    let job = wait_finished(&d, "survivor", Duration::from_secs(15));
    assert_eq!(condition(&job).map(|c| c.0), Some("Complete".into()), "{job}");
    assert_eq!(job["status"]["succeeded"], 1);
    let log = d.get(&format!("{JOB_EXTRAS}/survivor/logs"), d.admin()).text;
    let expected: String = (1..=8).map(|i| format!("line {i}\n")).collect();
    assert_eq!(log, expected);
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "run\n",
        "the job ran exactly once"
    );
}

#[test]
fn a_job_that_ends_while_the_daemon_is_down_is_recorded() {
    let mut d = daemon("");
    create(
        &d,
        &job_yaml("quick", "sleep 0.5; echo done; exit 4", "  backoffLimit: 0", ""),
    );
    d.wait_until(&format!("{JOBS}/quick"), Duration::from_secs(10), |r| {
        r.body["status"]["ready"] == 1
    });
    d.kill9();
    std::thread::sleep(Duration::from_millis(1200));
    d.restart();
    let job = wait_finished(&d, "quick", Duration::from_secs(10));
    assert_eq!(job["status"]["hearth"]["lastExit"]["exitCode"], 4, "{job}");
    assert_eq!(
        d.get(&format!("{JOB_EXTRAS}/quick/logs"), d.admin()).text,
        "done\n"
    );
}

#[test]
fn simulated_gpus_are_queued_and_handed_out_exclusively() {
    let d = daemon("[gpu]\nsimulate = 2\n");
    let gpu = "        resources:\n          limits:\n            nvidia.com/gpu: 1";
    for name in ["g1", "g2", "g3"] {
        create(
            &d,
            &job_yaml(
                name,
                "echo gpu=$CUDA_VISIBLE_DEVICES nv=$NVIDIA_VISIBLE_DEVICES; sleep 1.5",
                "",
                gpu,
            ),
        );
    }
    let queue = d
        .wait_until("/hearth/v1/queue", Duration::from_secs(10), |r| {
            r.body["running"] == 2
                && r.body["items"]
                    .as_array()
                    .is_some_and(|items| items.iter().any(|i| i["reason"].is_string()))
        })
        .body;
    assert_eq!(queue["queued"], 1, "{queue}");
    assert_eq!(queue["gpus_total"], 2);
    assert_eq!(queue["gpus_in_use"], 2);
    assert_eq!(queue["gpus_simulated"], true);
    let waiting = queue["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["phase"] == "Queued")
        .unwrap();
    assert_eq!(
        waiting["reason"], "waiting for 1 GPU, 0 free; 1st in queue",
        "{queue}"
    );
    let pending_name = waiting["name"].as_str().unwrap().to_string();
    let pending = d
        .wait_until(&format!("{JOBS}/{pending_name}"), Duration::from_secs(5), |r| {
            r.body["status"]["hearth"]["reason"].is_string()
        })
        .body;
    assert_eq!(pending["status"]["hearth"]["phase"], "Pending", "{pending}");
    assert_eq!(
        pending["status"]["hearth"]["reason"],
        "waiting for 1 GPU, 0 free; 1st in queue"
    );

    let mut seen = Vec::new();
    for name in ["g1", "g2", "g3"] {
        let job = wait_finished(&d, name, Duration::from_secs(20));
        assert_eq!(condition(&job).map(|c| c.0), Some("Complete".into()), "{job}");
        let log = d.get(&format!("{JOB_EXTRAS}/{name}/logs"), d.admin()).text;
        let uuid = log
            .trim()
            .strip_prefix("gpu=")
            .and_then(|s| s.split(' ').next())
            .unwrap()
            .to_string();
        assert!(uuid.starts_with("GPU-"), "{log}");
        assert!(log.contains(&format!("nv={uuid}")), "{log}");
        seen.push(uuid);
    }
    let running_together: Vec<_> = seen.iter().filter(|u| **u != seen[2]).collect();
    assert!(
        seen[0] != seen[1],
        "the two jobs that ran together had distinct GPUs: {seen:?}"
    );
    assert!(!running_together.is_empty());

    let big = d.post_yaml(
        JOBS,
        d.admin(),
        &job_yaml(
            "big",
            "true",
            "",
            "        resources:\n          limits:\n            nvidia.com/gpu: 3",
        ),
    );
    big.assert_status(422, "Invalid");
    assert!(big.body["message"].as_str().unwrap().contains("3 GPUs"), "{big}");
    assert_eq!(
        d.get(&format!("{JOBS}/big"), d.admin()).status,
        404,
        "nothing was stored"
    );
}

#[test]
fn jobs_without_gpus_see_none() {
    let d = daemon("[gpu]\nsimulate = 1\n");
    create(
        &d,
        &job_yaml(
            "cpu",
            "echo [$CUDA_VISIBLE_DEVICES] $NVIDIA_VISIBLE_DEVICES",
            "",
            "",
        ),
    );
    wait_finished(&d, "cpu", Duration::from_secs(10));
    assert_eq!(
        d.get(&format!("{JOB_EXTRAS}/cpu/logs"), d.admin()).text,
        "[] void\n"
    );
}

#[test]
fn dcgm_gauges_show_simulated_gpus() {
    let d = daemon("[gpu]\nsimulate = 2\n");
    let metrics = d.get("/metrics", d.admin()).text;
    for name in [
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
    ] {
        let lines: Vec<_> = metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .collect();
        assert_eq!(lines.len(), 2, "{name}: {metrics}");
        for line in lines {
            for label in [
                "gpu=\"",
                "UUID=\"GPU-",
                "modelName=\"",
                "Hostname=\"",
                "simulated=\"true\"",
            ] {
                assert!(line.contains(label), "{line}");
            }
        }
    }
    let node = d.get("/hearth/v1/node", d.admin()).body;
    assert!(node["limits"].as_str().unwrap().contains("limits"), "{node}");
}

#[test]
fn unhonoured_job_fields_are_refused_by_name_and_nothing_is_stored() {
    let d = daemon("");
    let cases = [
        (
            "hostnet",
            "      hostNetwork: true\n",
            "spec.template.spec.hostNetwork",
        ),
        (
            "init",
            "      initContainers: []\n",
            "spec.template.spec.initContainers",
        ),
    ];
    for (name, extra, feature) in cases {
        let yaml = job_yaml(name, "true", "", "").replace(
            "      restartPolicy: Never\n",
            &format!("      restartPolicy: Never\n{extra}"),
        );
        let reply = d.post_yaml(JOBS, d.admin(), &yaml);
        reply.assert_status(422, "Invalid");
        assert_eq!(reply.body["details"]["causes"][0]["field"], feature, "{reply}");
        assert_eq!(d.get(&format!("{JOBS}/{name}"), d.admin()).status, 404);
    }
    let two = job_yaml(
        "two",
        "true",
        "",
        "      - name: sidecar\n        command: ['true']",
    );
    let reply = d.post_yaml(JOBS, d.admin(), &two);
    reply.assert_status(422, "Invalid");
    assert!(
        reply.body["details"]["causes"][0]["field"]
            .as_str()
            .unwrap()
            .contains("containers[1]"),
        "{reply}"
    );

    let reply = d.post_yaml(
        JOBS,
        d.admin(),
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: [unclosed\n",
    );
    reply.assert_status(400, "BadRequest");
    assert!(
        reply.body["message"].as_str().unwrap().contains("line"),
        "{reply}"
    );

    let old = job_yaml("old", "true", "", "").replace("batch/v1", "batch/v1beta1");
    let reply = d.post_yaml(JOBS, d.admin(), &old);
    assert_eq!(reply.status, 422, "{reply}");
    assert_eq!(
        reply.body["details"]["causes"][0]["field"], "apiVersion",
        "{reply}"
    );

    let traversal = job_yaml("../../etc", "true", "", "");
    d.post_yaml(JOBS, d.admin(), &traversal)
        .assert_status(422, "Invalid");
    assert_eq!(d.get(JOBS, d.admin()).body["items"], serde_json::json!([]));
}

#[test]
fn the_pod_template_is_immutable_but_limits_may_change() {
    let d = daemon("");
    create(&d, &job_yaml("edit", "sleep 0.2", "  backoffLimit: 1", ""));
    let patched = d.patch(
        &format!("{JOBS}/edit"),
        d.admin(),
        &serde_json::json!({"spec": {"backoffLimit": 4}}),
    );
    assert_eq!(patched.status, 200, "{patched}");
    assert_eq!(patched.body["spec"]["backoffLimit"], 4);
    assert_eq!(patched.body["metadata"]["generation"], 2);
    let changed = d.patch(
        &format!("{JOBS}/edit"),
        d.admin(),
        &serde_json::json!({"spec": {"template": {"spec": {"restartPolicy": "OnFailure"}}}}),
    );
    changed.assert_status(422, "Invalid");
    assert_eq!(changed.body["details"]["causes"][0]["field"], "spec.template");
    wait_finished(&d, "edit", Duration::from_secs(10));
}

#[test]
fn logs_are_size_capped_and_rotated() {
    let d = daemon("[workloads]\nlog_max_bytes = 4096\n");
    // ~20 KiB over about 2.5 s: the shim rotates the log several times mid-run.
    let script = "i=0; while [ $i -lt 400 ]; do printf 'line %04d %040d\\n' $i 0; i=$((i+1)); case $i in *00) sleep 0.8;; esac; done";
    create(&d, &job_yaml("chatty", script, "", ""));
    let job = wait_finished(&d, "chatty", Duration::from_secs(20));
    assert_eq!(condition(&job).map(|c| c.0), Some("Complete".into()), "{job}");
    let log = d.get(&format!("{JOB_EXTRAS}/chatty/logs"), d.admin()).text;
    assert!(
        log.len() < 20_000,
        "older output was rotated away: {} bytes kept",
        log.len()
    );
    assert!(
        log.ends_with(&format!("line 0399 {:040}\n", 0)),
        "the newest output is kept: {:?}",
        &log[log.len().saturating_sub(80)..]
    );
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with("line ") && l.len() == 50),
        "no torn lines: {:?}",
        &lines[..3.min(lines.len())]
    );
}

#[test]
fn a_workload_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let d = daemon("");
    let pids = d.data_dir.join("stubborn-pids");
    let script = format!(
        "trap '' TERM; echo $$ >> {p}; sleep 300 & echo $! >> {p}; while true; do sleep 1; done",
        p = pids.display()
    );
    create(&d, &job_yaml("stubborn", &script, "", ""));
    let recorded = read_pids(&pids, 2);
    let deleted = Instant::now();
    assert_eq!(d.delete(&format!("{JOBS}/stubborn"), d.admin()).status, 200);
    d.wait_until(&format!("{JOBS}/stubborn"), Duration::from_secs(10), |r| {
        r.status == 404
    });
    while recorded.iter().any(|p| pid_alive(*p)) && deleted.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        recorded.iter().all(|p| !pid_alive(*p)),
        "SIGKILL followed the ignored SIGTERM"
    );
    let took = deleted.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "the 1 s grace period was honoured: {took:?}"
    );
}

#[test]
fn a_graceful_daemon_restart_leaves_running_jobs_alone() {
    let mut d = daemon("");
    let runs = d.data_dir.join("graceful-runs");
    let script = format!("echo run >> {}; sleep 1.5; echo finished", runs.display());
    create(&d, &job_yaml("steady", &script, "  backoffLimit: 0", ""));
    d.wait_until(&format!("{JOBS}/steady"), Duration::from_secs(10), |r| {
        r.body["status"]["ready"] == 1
    });
    let status = d.terminate();
    assert!(status.success(), "{status:?}; stderr:\n{}", d.logs());
    d.restart();
    let job = wait_finished(&d, "steady", Duration::from_secs(15));
    assert_eq!(condition(&job).map(|c| c.0), Some("Complete".into()), "{job}");
    assert_eq!(
        d.get(&format!("{JOB_EXTRAS}/steady/logs"), d.admin()).text,
        "finished\n"
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n");
}

#[test]
fn a_deleted_jobs_workloads_and_logs_are_removed() {
    let d = daemon("[workloads]\ngc_interval_seconds = 1");
    let workloads = d.data_dir.join("workloads");
    let entries = |dir: &Path| std::fs::read_dir(dir).map(|e| e.count()).unwrap_or(0);
    assert_eq!(create(&d, &job_yaml("kept", "echo kept", "", "")).status, 201);
    assert_eq!(
        create(
            &d,
            &job_yaml("brief", "echo brief", "  ttlSecondsAfterFinished: 0", "")
        )
        .status,
        201
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.get(&format!("{JOBS}/brief"), d.admin()).status != 404 {
        assert!(
            Instant::now() < deadline,
            "the finished job was not deleted after its TTL"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.wait_until(&format!("{JOBS}/kept"), Duration::from_secs(20), |r| {
        r.body["status"]["succeeded"] == 1
    });
    // Only the kept job's attempt is left once the collector has run.
    while entries(&workloads) != 1 {
        assert!(
            Instant::now() < deadline,
            "workload directories left: {:?}",
            std::fs::read_dir(&workloads).map(|e| e.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = d.get(&format!("{JOB_EXTRAS}/kept/logs"), d.admin());
    assert_eq!(logs.text, "kept\n", "{logs}");
    d.wait_logs_containing(&["removed ended workloads of deleted owners"]);
}

#[test]
fn a_workload_inherits_no_descriptor_beyond_its_stdio() {
    // A descriptor without close-on-exec, as a careless parent of the daemon leaves one:
    // the daemon and its shims inherit it, and the workload must not.
    let file = std::fs::File::open("/dev/null").unwrap();
    let leaked = nix::unistd::dup(&file).unwrap();
    let d = daemon("");
    create(&d, &job_yaml("fds", "ls /proc/self/fd", "  backoffLimit: 0", ""));
    let job = wait_finished(&d, "fds", Duration::from_secs(10));
    assert_eq!(
        condition(&job),
        Some(("Complete".into(), "CompletionsReached".into())),
        "{job}"
    );
    let logs = d.get(&format!("{JOB_EXTRAS}/fds/logs"), d.admin()).text;
    // 0-2 and the descriptor `ls` opens on /proc/self/fd itself.
    let fds: Vec<u32> = logs.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    assert_eq!(fds.len(), 4, "the workload holds more than its stdio: {logs:?}");
    assert_eq!(&fds[..3], &[0, 1, 2], "{logs:?}");
    drop(leaked);
}

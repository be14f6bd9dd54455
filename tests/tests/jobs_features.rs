//! batch/v1 Job features end to end through the API, with the status Kubernetes
//! documents for each (https://kubernetes.io/docs/concepts/workloads/controllers/job/):
//! completions and parallelism, Indexed completion, pod failure policy, per-index
//! backoff, success policy, suspend and resume, the pod template's deadline, and
//! `restartPolicy: OnFailure` counted as Kubernetes counts it.

use std::time::{Duration, Instant};

use hearth_e2e::{spawn_daemon_with, Daemon, Options};
use serde_json::{json, Value};

const JOBS: &str = "/apis/batch/v1/namespaces/team/jobs";

fn daemon() -> Daemon {
    spawn_daemon_with(Options::default().config("[jobs]\nbackoff_base_seconds = 0.1\n"))
}

/// A Job running `sh -c script`, with `spec` merged into its spec.
fn job_doc(name: &str, script: &str, spec: Value) -> Value {
    let mut doc = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}}}
    });
    for (k, v) in spec.as_object().unwrap() {
        if k == "template" {
            for (pk, pv) in v["spec"].as_object().unwrap() {
                doc["spec"]["template"]["spec"][pk] = pv.clone();
            }
        } else {
            doc["spec"][k] = v.clone();
        }
    }
    doc
}

fn create(d: &Daemon, doc: &Value) {
    let reply = d.post_json(JOBS, d.admin(), doc);
    assert_eq!(reply.status, 201, "{reply}");
}

fn condition<'a>(job: &'a Value, kind: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

/// Waits for `Complete` or `Failed` and returns the Job with (type, reason).
fn finished(d: &Daemon, name: &str, timeout: Duration) -> (Value, String, String) {
    let job = d
        .wait_until(&format!("{JOBS}/{name}"), timeout, |r| {
            condition(&r.body, "Complete").is_some() || condition(&r.body, "Failed").is_some()
        })
        .body;
    let (kind, c) = match condition(&job, "Complete") {
        Some(c) => ("Complete", c),
        None => ("Failed", condition(&job, "Failed").unwrap()),
    };
    let reason = c["reason"].as_str().unwrap_or_default().to_string();
    (job.clone(), kind.to_string(), reason)
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn completions_run_one_after_another_or_side_by_side() {
    let d = daemon();
    let log = d.data_dir.join("sequential");
    create(
        &d,
        &job_doc(
            "sequential",
            &format!("echo start >> {l}; sleep 0.3; echo end >> {l}", l = log.display()),
            json!({"completions": 3, "parallelism": 1}),
        ),
    );
    let (job, kind, reason) = finished(&d, "sequential", Duration::from_secs(20));
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Complete", "CompletionsReached"),
        "{job}"
    );
    assert_eq!(job["status"]["succeeded"], 3, "{job}");
    assert_eq!(job["status"]["failed"], 0, "{job}");
    assert_eq!(job["status"]["active"], 0, "{job}");
    assert_eq!(job["status"]["hearth"]["attempts"], 3, "{job}");
    assert!(job["status"]["completionTime"].is_string() && job["status"]["startTime"].is_string());
    assert!(condition(&job, "SuccessCriteriaMet").is_some(), "{job}");
    assert_eq!(
        lines(&log),
        ["start", "end", "start", "end", "start", "end"],
        "one at a time"
    );

    // Four completions, two at a time: never more than two run together.
    let running = d.data_dir.join("running");
    std::fs::create_dir(&running).unwrap();
    let seen = d.data_dir.join("seen");
    create(
        &d,
        &job_doc(
            "parallel",
            &format!(
                "touch {r}/$$; ls {r} | wc -l >> {s}; sleep 1; rm {r}/$$",
                r = running.display(),
                s = seen.display()
            ),
            json!({"completions": 4, "parallelism": 2}),
        ),
    );
    let (job, kind, _) = finished(&d, "parallel", Duration::from_secs(20));
    assert_eq!(kind, "Complete", "{job}");
    assert_eq!(job["status"]["succeeded"], 4, "{job}");
    let counts: Vec<u32> = lines(&seen).iter().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(
        counts.iter().all(|&n| n <= 2),
        "at most parallelism at once: {counts:?}"
    );
    assert!(counts.contains(&2), "two ran side by side: {counts:?}");

    // No completions: the work-queue pattern ends once one succeeded and all ended.
    create(&d, &job_doc("queue", "sleep 0.3", json!({"parallelism": 2})));
    let (job, kind, _) = finished(&d, "queue", Duration::from_secs(20));
    assert_eq!(kind, "Complete", "{job}");
    assert_eq!(job["status"]["succeeded"], 2, "both workers ran: {job}");
}

#[test]
fn indexed_jobs_see_their_index_and_report_completed_indexes() {
    let d = daemon();
    let out = d.data_dir.join("indexes");
    create(
        &d,
        &job_doc(
            "indexed",
            &format!("echo $JOB_COMPLETION_INDEX >> {}", out.display()),
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
        ),
    );
    let (job, kind, reason) = finished(&d, "indexed", Duration::from_secs(20));
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Complete", "CompletionsReached"),
        "{job}"
    );
    assert_eq!(job["status"]["completedIndexes"], "0-2", "{job}");
    assert_eq!(job["status"]["succeeded"], 3, "{job}");
    assert_eq!(
        job["status"]["failedIndexes"],
        Value::Null,
        "only with backoffLimitPerIndex"
    );
    let mut seen = lines(&out);
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);
}

#[test]
fn a_fail_job_rule_ends_the_job_at_once() {
    let d = daemon();
    let runs = d.data_dir.join("runs");
    create(
        &d,
        &job_doc(
            "answer",
            &format!("echo run >> {}; exit 42", runs.display()),
            json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}
            ]}}),
        ),
    );
    let (job, kind, reason) = finished(&d, "answer", Duration::from_secs(15));
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Failed", "PodFailurePolicy"),
        "{job}"
    );
    let message = condition(&job, "Failed").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("exit code 42") && message.contains("FailJob rule at index 0"),
        "{message}"
    );
    assert!(condition(&job, "FailureTarget").is_some(), "{job}");
    assert_eq!(job["status"]["failed"], 1, "{job}");
    assert_eq!(job["status"]["hearth"]["attempts"], 1, "{job}");
    assert_eq!(job["status"]["hearth"]["lastExit"]["exitCode"], 42, "{job}");
    assert_eq!(lines(&runs).len(), 1);
}

#[test]
fn ignore_and_count_rules_decide_what_counts_against_the_backoff_limit() {
    let d = daemon();
    // Exit 3 twice (ignored), then succeed: with backoffLimit 0 only Ignore lets it.
    let counter = d.data_dir.join("ignored");
    create(
        &d,
        &job_doc(
            "ignored",
            &format!(
                "echo x >> {c}; [ $(wc -l < {c}) -ge 3 ] || exit 3",
                c = counter.display()
            ),
            json!({"backoffLimit": 0, "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}}
            ]}}),
        ),
    );
    let (job, kind, _) = finished(&d, "ignored", Duration::from_secs(20));
    assert_eq!(kind, "Complete", "{job}");
    assert_eq!(
        job["status"]["failed"], 0,
        "ignored failures are not counted: {job}"
    );
    assert_eq!(job["status"]["succeeded"], 1);
    assert_eq!(job["status"]["hearth"]["attempts"], 3, "{job}");

    // Count (the default action, here on NotIn) retries up to the limit.
    create(
        &d,
        &job_doc(
            "counted",
            "exit 5",
            json!({"backoffLimit": 1, "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
                {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [42]}}
            ]}}),
        ),
    );
    let (job, kind, reason) = finished(&d, "counted", Duration::from_secs(20));
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Failed", "BackoffLimitExceeded"),
        "{job}"
    );
    assert_eq!(job["status"]["failed"], 2, "{job}");

    // Rules on pod conditions are refused, saying why.
    let reply = d.post_json(
        JOBS,
        d.admin(),
        &job_doc(
            "disrupted",
            "true",
            json!({"podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
            ]}}),
        ),
    );
    reply.assert_status(422, "Invalid");
    assert_eq!(
        reply.body["details"]["causes"][0]["field"], "spec.podFailurePolicy.rules[0].onPodConditions",
        "{reply}"
    );
}

#[test]
fn per_index_backoff_fails_only_the_failing_index() {
    let d = daemon();
    let script = "[ $JOB_COMPLETION_INDEX != 1 ]";
    create(
        &d,
        &job_doc(
            "per-index",
            script,
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "backoffLimitPerIndex": 1}),
        ),
    );
    let (job, kind, reason) = finished(&d, "per-index", Duration::from_secs(20));
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Failed", "FailedIndexes"),
        "{job}"
    );
    assert_eq!(job["status"]["completedIndexes"], "0,2", "{job}");
    assert_eq!(job["status"]["failedIndexes"], "1", "{job}");
    assert_eq!(job["status"]["failed"], 2, "index 1 ran twice: {job}");
    assert_eq!(job["status"]["succeeded"], 2, "{job}");

    create(
        &d,
        &job_doc(
            "max-failed",
            "[ $JOB_COMPLETION_INDEX = 0 ] && exit 1; sleep 20",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
                   "backoffLimitPerIndex": 0, "maxFailedIndexes": 0}),
        ),
    );
    let started = Instant::now();
    let (job, kind, reason) = finished(&d, "max-failed", Duration::from_secs(15));
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Failed", "MaxFailedIndexesExceeded"),
        "{job}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the others were stopped"
    );
    assert_eq!(job["status"]["failedIndexes"], "0", "{job}");
    assert_eq!(job["status"]["active"], 0, "{job}");
}

#[test]
fn a_success_policy_completes_the_job_early() {
    let d = daemon();
    create(
        &d,
        &job_doc(
            "leader",
            "[ $JOB_COMPLETION_INDEX = 0 ] && exit 0; sleep 30",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
                   "successPolicy": {"rules": [{"succeededIndexes": "0"}]}}),
        ),
    );
    let started = Instant::now();
    let (job, kind, reason) = finished(&d, "leader", Duration::from_secs(15));
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Complete", "SuccessPolicy"),
        "{job}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let met = condition(&job, "SuccessCriteriaMet").unwrap();
    assert_eq!(met["reason"], "SuccessPolicy");
    assert_eq!(met["message"], "Matched rules at index 0");
    assert_eq!(job["status"]["completedIndexes"], "0", "{job}");
    assert_eq!(
        job["status"]["active"], 0,
        "the other indexes were stopped: {job}"
    );

    let reply = d.post_json(
        JOBS,
        d.admin(),
        &job_doc(
            "not-indexed",
            "true",
            json!({"successPolicy": {"rules": [{"succeededCount": 1}]}}),
        ),
    );
    reply.assert_status(422, "Invalid");
    assert_eq!(reply.body["details"]["causes"][0]["field"], "spec.successPolicy");
}

#[test]
fn a_suspended_job_waits_and_resumes() {
    let d = daemon();
    let runs = d.data_dir.join("runs");
    create(
        &d,
        &job_doc(
            "later",
            &format!("echo run >> {}; sleep 0.3", runs.display()),
            json!({"suspend": true}),
        ),
    );
    let job = d
        .wait_until(&format!("{JOBS}/later"), Duration::from_secs(10), |r| {
            condition(&r.body, "Suspended").is_some()
        })
        .body;
    let suspended = condition(&job, "Suspended").unwrap();
    assert_eq!(suspended["reason"], "JobSuspended", "{job}");
    assert_eq!(suspended["message"], "Job suspended");
    assert_eq!(
        job["status"]["startTime"],
        Value::Null,
        "a suspended Job has not started: {job}"
    );
    assert_eq!(job["status"]["active"], 0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!runs.exists(), "nothing ran while suspended");

    let reply = d.patch(
        &format!("{JOBS}/later"),
        d.admin(),
        &json!({"spec": {"suspend": false}}),
    );
    assert_eq!(reply.status, 200, "{reply}");
    let (job, kind, _) = finished(&d, "later", Duration::from_secs(15));
    assert_eq!(kind, "Complete", "{job}");
    let resumed = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Suspended")
        .unwrap();
    assert_eq!(resumed["status"], "False", "{job}");
    assert_eq!(resumed["reason"], "JobResumed");
    assert_eq!(lines(&runs).len(), 1);

    // Suspending a running Job stops its attempt; resuming starts a new one.
    let marker = d.data_dir.join("second-run");
    create(
        &d,
        &job_doc(
            "paused",
            &format!("[ -e {m} ] && exit 0; touch {m}; sleep 30", m = marker.display()),
            json!({"backoffLimit": 0}),
        ),
    );
    d.wait_until(&format!("{JOBS}/paused"), Duration::from_secs(10), |r| {
        r.body["status"]["ready"] == 1
    });
    // Running is not yet past `touch`: under load a stop could land before it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first attempt never wrote its marker"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.patch(
        &format!("{JOBS}/paused"),
        d.admin(),
        &json!({"spec": {"suspend": true}}),
    );
    let job = d
        .wait_until(&format!("{JOBS}/paused"), Duration::from_secs(10), |r| {
            condition(&r.body, "Suspended").is_some() && r.body["status"]["active"] == 0
        })
        .body;
    assert_eq!(job["status"]["hearth"]["phase"], "Suspended", "{job}");
    let job = d
        .wait_until(&format!("{JOBS}/paused"), Duration::from_secs(5), |r| {
            r.body["status"]["startTime"].is_null()
        })
        .body;
    assert_eq!(job["status"]["failed"], 1, "the stopped attempt is shown: {job}");
    d.patch(
        &format!("{JOBS}/paused"),
        d.admin(),
        &json!({"spec": {"suspend": false}}),
    );
    let (job, kind, _) = finished(&d, "paused", Duration::from_secs(15));
    assert_eq!(kind, "Complete", "a stop for suspension is not a failure: {job}");
    assert_eq!(job["status"]["hearth"]["attempts"], 2, "{job}");
}

#[test]
fn the_pod_templates_deadline_bounds_each_attempt() {
    let d = daemon();
    create(
        &d,
        &job_doc(
            "slow-attempts",
            "sleep 30",
            json!({"backoffLimit": 1, "template": {"spec": {"activeDeadlineSeconds": 1}}}),
        ),
    );
    let started = Instant::now();
    let (job, kind, reason) = finished(&d, "slow-attempts", Duration::from_secs(20));
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Failed", "BackoffLimitExceeded"),
        "a pod deadline fails the attempt, not the Job: {job}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(job["status"]["failed"], 2, "{job}");
    assert_eq!(
        job["status"]["hearth"]["lastExit"]["reason"], "DeadlineExceeded",
        "{job}"
    );
}

#[test]
fn a_job_deadline_shows_the_attempt_it_killed() {
    let d = daemon();
    create(
        &d,
        &job_doc(
            "overtime",
            "sleep 30",
            json!({"activeDeadlineSeconds": 1, "backoffLimit": 5}),
        ),
    );
    let (job, kind, reason) = finished(&d, "overtime", Duration::from_secs(15));
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Failed", "DeadlineExceeded"),
        "{job}"
    );
    assert_eq!(job["status"]["failed"], 1, "{job}");
    assert_eq!(job["status"]["active"], 0, "{job}");
    assert_eq!(job["status"]["hearth"]["attempts"], 1, "{job}");
    let last = &job["status"]["hearth"]["lastExit"];
    assert!(
        last["reason"].is_string() && last["finishedAt"].is_string(),
        "{job}"
    );
}

#[test]
fn on_failure_restarts_count_as_kubernetes_counts_them() {
    let d = daemon();
    let counter = d.data_dir.join("restarts");
    create(
        &d,
        &job_doc(
            "restarting",
            &format!("echo x >> {c}; [ $(wc -l < {c}) -ge 3 ]", c = counter.display()),
            json!({"backoffLimit": 3, "template": {"spec": {"restartPolicy": "OnFailure"}}}),
        ),
    );
    let (job, kind, _) = finished(&d, "restarting", Duration::from_secs(20));
    assert_eq!(kind, "Complete", "{job}");
    assert_eq!(job["status"]["succeeded"], 1, "{job}");
    assert_eq!(
        job["status"]["failed"], 0,
        "restarts in place are not failed pods: {job}"
    );
    assert_eq!(job["status"]["hearth"]["attempts"], 3, "{job}");

    create(
        &d,
        &job_doc(
            "crashing",
            "exit 1",
            json!({"backoffLimit": 1, "template": {"spec": {"restartPolicy": "OnFailure"}}}),
        ),
    );
    let (job, kind, reason) = finished(&d, "crashing", Duration::from_secs(20));
    assert_eq!(
        (kind.as_str(), reason.as_str()),
        ("Failed", "BackoffLimitExceeded"),
        "{job}"
    );
    assert_eq!(
        job["status"]["failed"], 1,
        "one pod, restarted once, failed: {job}"
    );
    assert_eq!(job["status"]["hearth"]["attempts"], 2, "{job}");
}

#[test]
fn what_kubernetes_keeps_immutable_stays_so() {
    let d = daemon();
    create(
        &d,
        &job_doc(
            "fixed",
            "sleep 0.2",
            json!({"completions": 2, "parallelism": 1, "suspend": true}),
        ),
    );
    let reply = d.patch(
        &format!("{JOBS}/fixed"),
        d.admin(),
        &json!({"spec": {"completions": 3}}),
    );
    reply.assert_status(422, "Invalid");
    assert_eq!(
        reply.body["details"]["causes"][0]["field"], "spec.completions",
        "{reply}"
    );
    let reply = d.patch(
        &format!("{JOBS}/fixed"),
        d.admin(),
        &json!({"spec": {"parallelism": 2, "suspend": false}}),
    );
    assert_eq!(reply.status, 200, "{reply}");
    let (job, kind, _) = finished(&d, "fixed", Duration::from_secs(15));
    assert_eq!(kind, "Complete", "{job}");
    assert_eq!(job["status"]["succeeded"], 2, "{job}");
}

#[test]
fn a_daemon_kill9_mid_way_through_indexes_runs_each_index_once() {
    let mut d = daemon();
    let runs = d.data_dir.join("runs");
    create(
        &d,
        &job_doc(
            "durable",
            &format!("echo $JOB_COMPLETION_INDEX >> {}; sleep 0.4", runs.display()),
            json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed", "backoffLimit": 0}),
        ),
    );
    d.wait_until(&format!("{JOBS}/durable"), Duration::from_secs(10), |r| {
        r.body["status"]["ready"] == 2
    });
    d.kill9();
    std::thread::sleep(Duration::from_millis(300));
    d.restart();
    let (job, kind, _) = finished(&d, "durable", Duration::from_secs(20));
    assert_eq!(kind, "Complete", "{job}");
    assert_eq!(job["status"]["completedIndexes"], "0-3", "{job}");
    assert_eq!(job["status"]["failed"], 0, "{job}");
    let mut seen = lines(&runs);
    seen.sort();
    assert_eq!(seen, ["0", "1", "2", "3"], "each index ran exactly once");
}

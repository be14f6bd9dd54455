//! `pods/{name}/log` with the `PodLogOptions` that look at each line, as the kubelet
//! answers them: `timestamps` (RFC3339Nano and a space before each line, the time the
//! workload wrote it), `sinceSeconds`/`sinceTime` (older lines left out), `limitBytes`
//! (output cut after so many bytes), `previous` (the attempt before, in the same pod),
//! with stdout and stderr kept in the order written, and with `follow`.

use std::time::{Duration, Instant};

use hearth_e2e::{spawn_daemon_with, Daemon, Options, Reply};
use serde_json::{json, Value};

const NS: &str = "logs";

fn daemon() -> Daemon {
    spawn_daemon_with(Options::default().config("[jobs]\nbackoff_base_seconds = 0.1\n"))
}

fn create_job(d: &Daemon, name: &str, script: &str, restart: &str, backoff: u32) {
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": backoff, "template": {"spec": {"restartPolicy": restart,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}}}
    });
    let reply = d.post_json(&format!("/apis/batch/v1/namespaces/{NS}/jobs"), d.admin(), &job);
    assert_eq!(reply.status, 201, "{reply}");
}

/// The Job's pods, oldest attempt first, once `done` holds for the list.
fn pods(d: &Daemon, job: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let path = format!("/api/v1/namespaces/{NS}/pods?labelSelector=job-name%3D{job}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = d.get(&path, d.admin());
        assert_eq!(reply.status, 200, "{reply}");
        let mut items = reply.body["items"].as_array().cloned().unwrap_or_default();
        items.sort_by_key(|p| {
            p["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string()
        });
        if done(&items) {
            return items;
        }
        assert!(Instant::now() < deadline, "pods of {job}: {reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

fn name(pod: &Value) -> &str {
    pod["metadata"]["name"].as_str().unwrap()
}

fn log(d: &Daemon, pod: &str, query: &str) -> Reply {
    d.get(
        &format!("/api/v1/namespaces/{NS}/pods/{pod}/log?{query}"),
        d.admin(),
    )
}

/// RFC 3339 to ns since the epoch (UTC `Z` only, as the kubelet prints them here).
fn nanos(at: &str) -> i128 {
    let (date, rest) = at.split_once('T').unwrap_or_else(|| panic!("{at}"));
    let ymd: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let rest = rest.strip_suffix('Z').unwrap_or_else(|| panic!("not UTC: {at}"));
    let (hms, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let hms: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    assert!(
        frac.len() <= 9 && !frac.ends_with('0'),
        "RFC3339Nano drops trailing zeros: {at}"
    );
    let frac: i128 = format!("{frac:0<9}").parse().unwrap();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (ymd[0] - i64::from(ymd[1] <= 2), ymd[1], ymd[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    i128::from(secs) * 1_000_000_000 + frac
}

fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

#[test]
fn timestamps_since_and_limit_bytes_look_at_each_line() {
    let d = daemon();
    let before = now_nanos();
    create_job(
        &d,
        "stamped",
        "echo one; echo err >&2; echo -n par; sleep 0.2; echo tial; sleep 2.5; echo two; echo three",
        "Never",
        0,
    );
    let pod = pods(&d, "stamped", |p| p.len() == 1 && phase(&p[0]) == "Succeeded");
    let pod = name(&pod[0]).to_string();
    let after = now_nanos();

    // Without options the bytes are as written, stdout and stderr in order.
    let plain = log(&d, &pod, "");
    assert_eq!(plain.status, 200, "{plain}");
    assert_eq!(plain.text, "one\nerr\npartial\ntwo\nthree\n");

    let stamped = log(&d, &pod, "timestamps=true");
    assert_eq!(stamped.status, 200, "{stamped}");
    assert!(stamped.content_type().starts_with("text/plain"), "{stamped}");
    let lines: Vec<(i128, &str)> = stamped
        .text
        .lines()
        .map(|l| {
            let (at, text) = l.split_once(' ').unwrap_or_else(|| panic!("no time: {l:?}"));
            (nanos(at), text)
        })
        .collect();
    let texts: Vec<&str> = lines.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        texts,
        ["one", "err", "partial", "two", "three"],
        "{}",
        stamped.text
    );
    for pair in lines.windows(2) {
        assert!(pair[0].0 <= pair[1].0, "times go back: {}", stamped.text);
    }
    assert!(lines[0].0 >= before && lines[4].0 <= after, "{}", stamped.text);
    // The sleep shows between the lines before it and after it.
    let gap = lines[3].0 - lines[2].0;
    assert!(gap >= 2_000_000_000, "{gap} ns: {}", stamped.text);

    // sinceTime between the two groups keeps the later lines only.
    let cut = lines[2].0 + 1_000_000_000;
    let since_time = format!(
        "{}Z",
        stamped.text.lines().nth(3).unwrap().split_once('.').unwrap().0
    );
    let since = log(&d, &pod, &format!("sinceTime={since_time}"));
    assert_eq!(since.status, 200, "{since}");
    assert_eq!(since.text, "two\nthree\n", "since {since_time} ({cut})");
    // sinceSeconds: everything was written in the last minute, nothing in the last
    // second once it is over.
    assert_eq!(log(&d, &pod, "sinceSeconds=60").text, plain.text);
    std::thread::sleep(Duration::from_millis(1100));
    let recent = log(&d, &pod, "sinceSeconds=1");
    assert_eq!(recent.status, 200, "{recent}");
    assert_eq!(recent.text, "");

    // tailLines first, then the since filter, then timestamps, then limitBytes.
    let tail = log(&d, &pod, "tailLines=2&timestamps=true");
    assert_eq!(
        tail.text,
        stamped
            .text
            .lines()
            .skip(3)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    assert_eq!(log(&d, &pod, "limitBytes=6").text, "one\ner");
    let cut_stamped = log(&d, &pod, "limitBytes=10&timestamps=true");
    assert_eq!(cut_stamped.text, stamped.text[..10]);
    // Following an ended pod gives the same and ends.
    assert_eq!(log(&d, &pod, "follow=true&timestamps=true").text, stamped.text);

    for (query, field) in [
        ("sinceSeconds=0", "sinceSeconds"),
        ("sinceSeconds=abc", "sinceSeconds"),
        ("sinceSeconds=2147483648", "sinceSeconds"),
        ("limitBytes=0", "limitBytes"),
        ("timestamps=maybe", "timestamps"),
        ("sinceTime=yesterday", "sinceTime"),
        ("sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z", "sinceTime"),
    ] {
        let reply = log(&d, &pod, query);
        assert_eq!(reply.status, 400, "{query}: {reply}");
        assert!(reply.text.contains(field), "{query}: {reply}");
    }
}

#[test]
fn follow_with_timestamps_streams_lines_as_they_are_written() {
    let d = daemon();
    create_job(&d, "streamed", "echo first; sleep 1.5; echo second", "Never", 0);
    let pod = pods(&d, "streamed", |p| p.len() == 1 && phase(&p[0]) == "Running");
    let pod = name(&pod[0]).to_string();
    let started = Instant::now();
    let followed = log(&d, &pod, "follow=true&timestamps=true");
    assert_eq!(followed.status, 200, "{followed}");
    assert!(started.elapsed() >= Duration::from_millis(500), "did not follow");
    let texts: Vec<&str> = followed
        .text
        .lines()
        .map(|l| l.split_once(' ').unwrap().1)
        .collect();
    assert_eq!(texts, ["first", "second"], "{}", followed.text);
}

#[test]
fn previous_is_the_attempt_before_in_the_same_pod() {
    let d = daemon();
    // Each attempt runs in a directory of its own: the marker lives outside them, in
    // a directory any namespace user may write.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let marker = shared.path().join("marker");
    let marker = marker.display();
    // The first attempt fails; the restart (OnFailure: the same pod) succeeds.
    create_job(
        &d,
        "retried",
        &format!("if [ -e {marker} ]; then echo second try; else echo first try; touch {marker}; exit 3; fi"),
        "OnFailure",
        2,
    );
    let pods = pods(&d, "retried", |p| p.iter().any(|p| phase(p) == "Succeeded"));
    let last = name(pods.last().unwrap()).to_string();
    let first = name(&pods[0]).to_string();
    assert_ne!(first, last);
    assert_eq!(log(&d, &last, "").text, "second try\n");
    let previous = log(&d, &last, "previous=true");
    assert_eq!(previous.status, 200, "{previous}");
    assert_eq!(previous.text, "first try\n");
    let stamped = log(&d, &last, "previous=true&timestamps=true");
    assert!(stamped.text.ends_with(" first try\n"), "{stamped}");
    // The first attempt had none before it: the kubelet's 400.
    let none = log(&d, &first, "previous=true");
    assert_eq!(none.status, 400, "{none}");
    assert!(
        none.text.contains("previous terminated container") && none.text.contains(&first),
        "{none}"
    );
}

/// Every file named `name` under `dir`.
fn find(dir: &std::path::Path, name: &str, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            find(&path, name, out);
        } else if entry.file_name() == name {
            out.push(path);
        }
    }
}

#[test]
fn times_survive_a_kill_9_of_the_daemon_and_a_log_without_them_refuses_by_name() {
    let mut d = daemon();
    create_job(&d, "survivor", "echo before; sleep 2; echo after", "Never", 0);
    pods(&d, "survivor", |p| p.len() == 1 && phase(&p[0]) == "Running");
    // The shim, not the daemon, records the times: the line written while no daemon
    // runs has its own.
    d.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    d.restart();
    let pod = pods(&d, "survivor", |p| p.len() == 1 && phase(&p[0]) == "Succeeded");
    let pod = name(&pod[0]).to_string();
    let stamped = log(&d, &pod, "timestamps=true");
    assert_eq!(stamped.status, 200, "{stamped}");
    let times: Vec<i128> = stamped
        .text
        .lines()
        .map(|l| nanos(l.split_once(' ').unwrap().0))
        .collect();
    assert_eq!(times.len(), 2, "{stamped}");
    assert!(times[1] - times[0] >= 1_500_000_000, "{stamped}");

    // A log kept without times (by the shim of an earlier Hearth): the bytes still
    // serve, what needs per-line times is refused by name.
    let mut found = Vec::new();
    find(&d.data_dir, "output.times", &mut found);
    assert_eq!(found.len(), 1, "{found:?}");
    std::fs::remove_file(&found[0]).unwrap();
    assert_eq!(log(&d, &pod, "").text, "before\nafter\n");
    assert_eq!(log(&d, &pod, "limitBytes=3").text, "bef");
    for (query, feature) in [
        ("timestamps=true", "timestamps"),
        ("sinceSeconds=60", "sinceSeconds"),
    ] {
        let refused = log(&d, &pod, query);
        assert_eq!(refused.status, 422, "{query}: {refused}");
        assert!(
            refused.text.contains(feature) && refused.text.contains("per-line times"),
            "{refused}"
        );
    }
}

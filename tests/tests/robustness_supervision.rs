//! Supervised controllers: a controller killed by a fault is restarted and `/readyz`
//! says so while it is down; one that stops making progress is reported stuck and stops
//! the systemd watchdog; a reconcile that panics is recorded on its object while the
//! daemon keeps serving. Faults come from the `HEARTH_FAULT_INJECT` test hook
//! (daemon/src/controller.rs).

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use hearth_e2e::{spawn_daemon_with, Daemon, Options, Reply};

const JOBS: &str = "/apis/batch/v1/namespaces/team/jobs";
const JOB_EXTRAS: &str = "/hearth/v1/namespaces/team/jobs";

fn job(name: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
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

fn daemon(fault: &str, extra: Vec<(&str, &str)>) -> Daemon {
    let mut options = Options::default().env("HEARTH_FAULT_INJECT", fault);
    for (k, v) in extra {
        options = options.env(k, v);
    }
    spawn_daemon_with(options)
}

/// Polls `/readyz` every 10 ms until `want` holds.
fn wait_readyz(d: &Daemon, timeout: Duration, want: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = Instant::now() + timeout;
    loop {
        let r = d.get("/readyz", None);
        if want(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never matched; last: {r}\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn job_complete(r: &Reply) -> bool {
    r.body["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    })
}

#[test]
fn a_controller_killed_by_a_fault_is_restarted_and_readyz_says_so_while_it_is_down() {
    let d = daemon("panic-controller:jobs-controller", vec![]);
    wait_readyz(&d, Duration::from_secs(10), |r| r.status == 200);
    // The fault fires when the controller first takes work.
    assert_eq!(d.post_yaml(JOBS, d.admin(), &job("one")).status, 201);
    let down = wait_readyz(&d, Duration::from_secs(10), |r| r.status == 503);
    assert!(down.text.contains("jobs-controller"), "{down}");
    assert!(down.text.contains("panicked: injected fault"), "{down}");
    assert!(down.text.contains("restarting in"), "{down}");
    let up = wait_readyz(&d, Duration::from_secs(10), |r| r.status == 200);
    let jobs = up.body["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "jobs-controller")
        .cloned()
        .unwrap();
    assert!(
        jobs["detail"].as_str().unwrap().contains("restarted 1 times"),
        "{up}"
    );
    // The restarted controller picks the job up again (its key was lost with the panic).
    d.wait_until(&format!("{JOBS}/one"), Duration::from_secs(30), job_complete);
    assert!(d.logs().contains("restarting in"), "{}", d.logs());
}

#[test]
fn a_panicking_reconcile_is_recorded_on_its_object_and_the_daemon_keeps_serving() {
    let d = daemon("panic-reconcile:jobs-controller", vec![]);
    assert_eq!(d.post_yaml(JOBS, d.admin(), &job("doomed")).status, 201);
    let events = d.wait_until(
        &format!("{JOB_EXTRAS}/doomed/events"),
        Duration::from_secs(10),
        |r| r.text.contains("ReconcilePanicked"),
    );
    assert!(
        events.text.contains("reconcile panicked: injected fault"),
        "{events}"
    );
    assert!(events.text.contains("retrying in"), "{events}");
    // Caught, not a crash: every part is still up and the API answers.
    assert_eq!(d.get("/readyz", None).status, 200, "{}", d.logs());
    assert_eq!(d.get(JOBS, d.admin()).status, 200);
}

struct NotifySocket {
    _dir: tempfile::TempDir,
    path: String,
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        NotifySocket {
            _dir: dir,
            path: path.display().to_string(),
            socket,
            seen: Vec::new(),
        }
    }

    /// Reads what arrives for `period`.
    fn drain(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .extend(String::from_utf8_lossy(&buf[..n]).lines().map(String::from));
            }
        }
    }

    fn count(&self, line: &str) -> usize {
        self.seen.iter().filter(|l| *l == line).count()
    }
}

#[test]
fn a_controller_that_stops_making_progress_stops_the_watchdog() {
    let mut sock = NotifySocket::bind();
    let d = daemon(
        "stall-controller:jobs-controller",
        vec![
            ("NOTIFY_SOCKET", sock.path.as_str()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    sock.drain(Duration::from_millis(1500));
    assert!(sock.count("READY=1") == 1, "{:?}", sock.seen);
    assert!(sock.count("WATCHDOG=1") >= 1, "{:?}", sock.seen);
    assert_eq!(d.post_yaml(JOBS, d.admin(), &job("stuck")).status, 201);
    let stuck = wait_readyz(&d, Duration::from_secs(30), |r| r.status == 503);
    assert!(
        stuck.text.contains("jobs-controller: stuck: no progress"),
        "{stuck}"
    );
    // From now on no pings, while the status line names the stuck controller.
    sock.drain(Duration::from_millis(600));
    let before = sock.count("WATCHDOG=1");
    sock.drain(Duration::from_millis(2000));
    assert_eq!(sock.count("WATCHDOG=1"), before, "pings went on: {:?}", sock.seen);
    let status = sock.seen.iter().rev().find(|l| l.starts_with("STATUS=")).unwrap();
    assert!(
        status.contains("not ready (") && status.contains("jobs-controller: stuck"),
        "{status}"
    );
    // The other parts are unaffected.
    assert_eq!(d.get("/hearth/v1/version", d.admin()).status, 200);
}

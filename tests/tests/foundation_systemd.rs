//! The systemd notify protocol, received on a socket the test binds, and an orderly
//! stop on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use hearth_e2e::{spawn_daemon_with, Options};

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
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        NotifySocket {
            _dir: dir,
            path: path.display().to_string(),
            socket,
            seen: Vec::new(),
        }
    }

    /// Reads datagrams until one has a line for which `want` holds; returns that line.
    fn wait_for(&mut self, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        if let Some(line) = self.seen.iter().find(|l| want(l)) {
            return line.clone();
        }
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                for line in text.lines() {
                    self.seen.push(line.to_string());
                }
                if let Some(line) = text.lines().find(|l| want(l)) {
                    return line.to_string();
                }
            }
        }
        panic!(
            "no such notification within {timeout:?}; received: {:?}",
            self.seen
        );
    }
}

#[test]
fn ready_status_and_stopping_are_sent_and_sigterm_exits_zero() {
    let mut sock = NotifySocket::bind();
    let mut d = spawn_daemon_with(Options::default().env("NOTIFY_SOCKET", &sock.path));
    sock.wait_for(Duration::from_secs(10), |l| l == "READY=1");
    let status = sock.wait_for(Duration::from_secs(10), |l| l.starts_with("STATUS="));
    assert!(status.contains("ready"), "{status}");
    assert!(status.contains("runtime process"), "{status}");
    assert!(status.contains("GPUs 0/0"), "{status}");
    // The harness runs without isolation: the line says namespaces are not isolated.
    assert!(
        status.contains("namespaces share one Unix user, not isolated"),
        "{status}"
    );
    // READY=1 only once the API answers.
    assert_eq!(d.get("/readyz", None).status, 200);

    let began = Instant::now();
    let exit = d
        .terminate_within(Duration::from_secs(10))
        .expect("hearth did not stop within 10 s");
    assert!(exit.success(), "exit status {exit}; log:\n{}", d.logs());
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        began.elapsed()
    );
    sock.wait_for(Duration::from_secs(1), |l| l == "STOPPING=1");
    assert!(
        !d.data_dir.join("hearth.addr").exists(),
        "hearth.addr left behind after a clean stop"
    );
    let logs = d.logs();
    assert!(logs.contains("stopped"), "{logs}");
}

#[test]
fn watchdog_pings_when_watchdog_usec_is_set() {
    let mut sock = NotifySocket::bind();
    let d = spawn_daemon_with(
        Options::default()
            .env("NOTIFY_SOCKET", &sock.path)
            .env("WATCHDOG_USEC", "400000"),
    );
    sock.wait_for(Duration::from_secs(10), |l| l == "READY=1");
    sock.wait_for(Duration::from_secs(5), |l| l == "WATCHDOG=1");
    let count_before = sock.seen.iter().filter(|l| *l == "WATCHDOG=1").count();
    // Pings keep coming at about half the interval.
    std::thread::sleep(Duration::from_millis(900));
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = sock.socket.recv(&mut buf) {
        sock.seen
            .extend(String::from_utf8_lossy(&buf[..n]).lines().map(String::from));
    }
    let count_after = sock.seen.iter().filter(|l| *l == "WATCHDOG=1").count();
    assert!(count_after >= count_before + 2, "{:?}", sock.seen);
    drop(d);
}

#[test]
fn no_watchdog_pings_for_another_pid() {
    let mut sock = NotifySocket::bind();
    let d = spawn_daemon_with(
        Options::default()
            .env("NOTIFY_SOCKET", &sock.path)
            .env("WATCHDOG_USEC", "200000")
            .env("WATCHDOG_PID", "1"),
    );
    sock.wait_for(Duration::from_secs(10), |l| l == "READY=1");
    std::thread::sleep(Duration::from_millis(600));
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = sock.socket.recv(&mut buf) {
        sock.seen
            .extend(String::from_utf8_lossy(&buf[..n]).lines().map(String::from));
    }
    assert!(!sock.seen.iter().any(|l| l == "WATCHDOG=1"), "{:?}", sock.seen);
    drop(d);
}

#[test]
fn sigterm_drains_an_in_flight_request() {
    let mut d = spawn_daemon_with(Options::default());
    let (client, url, token) = (d.client.clone(), d.api_url(), d.admin_token.clone());
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&progress);
    // Many requests racing the SIGTERM: each either completes or is refused at
    // connect; none is cut off half-answered.
    let racer = std::thread::spawn(move || {
        let mut answered = 0;
        for _ in 0..200 {
            match client
                .get(format!("{url}/hearth/v1/node"))
                .bearer_auth(&token)
                .send()
            {
                Ok(r) => {
                    assert_eq!(r.status().as_u16(), 200);
                    assert!(r.text().is_ok());
                    answered += 1;
                    seen.store(answered, std::sync::atomic::Ordering::SeqCst);
                }
                Err(e) if e.is_connect() => break,
                Err(e) if e.is_request() && answered > 0 => break,
                Err(e) => panic!("a request failed other than at connect: {e:?}"),
            }
        }
        answered
    });
    // SIGTERM only once requests are flowing, so the race is the one under test.
    let started = std::time::Instant::now();
    while progress.load(std::sync::atomic::Ordering::SeqCst) < 3
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let exit = d.terminate_within(Duration::from_secs(10)).expect("did not stop");
    assert!(exit.success(), "{exit}");
    assert!(racer.join().unwrap() > 0);
}

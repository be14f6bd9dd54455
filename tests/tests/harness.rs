//! The harness itself: start, restart on the same data dir, stop.

use hearth_e2e::{spawn_daemon, spawn_daemon_with, Options};

#[test]
fn starts_restarts_and_keeps_its_data() {
    let mut d = spawn_daemon();
    assert_eq!(d.get("/healthz", None).status, 200);
    let token = d.create_user("alice");
    let first_pid = d.pid();
    d.restart();
    assert_ne!(d.pid(), first_pid);
    let who = d.get("/hearth/v1/whoami", Some(&token));
    assert_eq!(who.status, 200, "{who}");
    assert_eq!(who.body["user"], "alice");
    let status = d.terminate();
    assert!(status.success(), "{status:?}; stderr:\n{}", d.logs());
}

#[test]
fn reuses_a_given_data_dir_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = spawn_daemon_with(
        Options::default()
            .data_dir(dir.path())
            .config("[metrics]\npublic = true"),
    );
    assert_eq!(d.data_dir, dir.path());
    assert_eq!(d.get("/metrics", None).status, 200);
    assert!(d.serving_url().starts_with("http://127.0.0.1:"));
}

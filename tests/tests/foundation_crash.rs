//! `kill -9` in the middle of writes: the database opens, passes its integrity check,
//! and everything the daemon acknowledged is still there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_e2e::spawn_daemon;
use serde_json::json;

#[test]
fn kill9_while_writing_loses_nothing_acknowledged() {
    let mut d = spawn_daemon();
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (client, url, token) = (d.client.clone(), d.api_url(), d.admin_token.clone());
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        writers.push(std::thread::spawn(move || {
            let mut attempted = 0;
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("u{w}-{i}");
                attempted += 1;
                let sent = client
                    .post(format!("{url}/hearth/v1/users"))
                    .bearer_auth(&token)
                    .json(&json!({ "name": name }))
                    .send();
                match sent {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let body: serde_json::Value = r.json().unwrap_or_default();
                        let secret = body["token"]["token"].as_str().unwrap_or_default().to_string();
                        acknowledged.lock().unwrap().push((name, secret));
                    }
                    // The daemon died mid-request: this one was never acknowledged.
                    Ok(_) | Err(_) => break,
                }
            }
            attempted
        }));
    }
    // Let writes pile up, then kill while they are in flight.
    let started = Instant::now();
    while acknowledged.lock().unwrap().len() < 200 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9();
    stop.store(true, Ordering::Relaxed);
    let attempted: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 200,
        "too few writes before the kill: {}",
        acknowledged.len()
    );
    eprintln!(
        "{} writes acknowledged of {attempted} attempted before kill -9",
        acknowledged.len()
    );

    d.restart();

    let db = rusqlite::Connection::open(d.data_dir.join("hearth.db")).unwrap();
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let fk: i64 = db
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 0, "foreign key violations after the crash");
    drop(db);

    let r = d.get("/hearth/v1/users", d.admin());
    assert_eq!(r.status, 200, "{r}");
    let present: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    let namespaces = d.get("/hearth/v1/namespaces", d.admin());
    for (name, secret) in &acknowledged {
        assert!(
            present.contains(&name.as_str()),
            "acknowledged user {name} is missing after kill -9"
        );
        assert!(
            namespaces.text.contains(&format!("\"{name}\"")),
            "namespace {name} is missing"
        );
        let who = d.get("/hearth/v1/whoami", Some(secret));
        assert_eq!(
            who.status, 200,
            "{name}'s acknowledged token no longer works: {who}"
        );
    }
    // And the restarted daemon takes writes again.
    d.create_user("after-crash");
}

//! Many InferenceServices edited at once keep the serving controller making passes:
//! a dozen PATCHes within a second, each making a revision whose model fetch fails at
//! once, all reach their expected state within a bound, and /readyz never reports the
//! controller stuck.
//!
//! Edits that reach the store before the controller's next pass over a service are
//! coalesced (the controller is level-triggered, as KServe's is): the revision made is
//! the one for the spec that pass reads. So an edit made right after the create may
//! give revision 00001 (with the edited spec), never a revision per PATCH; a test that
//! waits for "00002" there can wait forever while the controller is healthy.

use std::time::{Duration, Instant};

use hearth_e2e::{spawn_daemon, Daemon};
use serde_json::{json, Value};

const BASE: &str = "/apis/serving.kserve.io/v1beta1/namespaces/churn/inferenceservices";
const SERVICES: usize = 12;
/// A pass over a dozen services with failing fetches takes well under a second;
/// this is generous on a loaded machine yet far below "until a restart".
const BOUND: Duration = Duration::from_secs(20);

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"minReplicas": 0, "sklearn": {"storageUri": "file:///nonexistent/m1"}}},
    })
}

/// PATCHes every service to `file:///nonexistent/m{round}`, all at once.
fn edit_all(d: &Daemon, names: &[String], round: u32) {
    std::thread::scope(|s| {
        for name in names {
            s.spawn(move || {
                let uri = format!("file:///nonexistent/m{round}");
                let patch = json!({"spec": {"predictor": {"sklearn": {"storageUri": uri}}}});
                let r = d.patch(&format!("{BASE}/{name}"), d.admin(), &patch);
                assert_eq!(r.status, 200, "{r}");
            });
        }
    });
}

/// The service's latest revision when the controller has observed its spec of
/// `round` and that revision failed on `m{round}`; `Err` with the answer otherwise.
fn failed_at(d: &Daemon, name: &str, round: u32) -> Result<String, String> {
    let r = d.get(&format!("{BASE}/{name}"), d.admin());
    let status = &r.body["status"];
    let observed = status["observedGeneration"] == r.body["metadata"]["generation"];
    let failed = status["conditions"].as_array().is_some_and(|c| {
        c.iter().any(|c| {
            c["reason"] == "RevisionFailed"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("/nonexistent/m{round}")))
        })
    });
    match status["components"]["predictor"]["latestCreatedRevision"].as_str() {
        Some(latest) if observed && failed => Ok(latest.to_string()),
        _ => Err(r.to_string()),
    }
}

/// Waits (up to `BOUND`) until every service has failed at `round`; returns each one's
/// latest revision name.
fn wait_all_failed(d: &Daemon, names: &[String], round: u32) -> Vec<String> {
    let deadline = Instant::now() + BOUND;
    loop {
        let states: Result<Vec<String>, String> = names.iter().map(|n| failed_at(d, n, round)).collect();
        match states {
            Ok(latest) => {
                let ready = d.get("/readyz", None);
                assert!(!ready.text.contains("stuck"), "round {round}: {ready}");
                return latest;
            }
            Err(last) => assert!(
                Instant::now() < deadline,
                "round {round}: not every service reached its failed revision within {BOUND:?}; \
                 /readyz: {}; last: {last}",
                d.get("/readyz", None)
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn many_services_edited_at_once_all_reach_their_new_revision() {
    let d = spawn_daemon();
    let names: Vec<String> = (0..SERVICES).map(|i| format!("churn{i}")).collect();
    for name in &names {
        let r = d.post_json(BASE, d.admin(), &service(name));
        assert_eq!(r.status, 201, "{r}");
    }
    // Edited before the controller may have seen them: the latest spec wins, whichever
    // revision number carries it.
    edit_all(&d, &names, 2);
    let mut latest = wait_all_failed(&d, &names, 2);
    for (name, revision) in names.iter().zip(&latest) {
        assert!(
            [
                format!("{name}-predictor-00001"),
                format!("{name}-predictor-00002")
            ]
            .contains(revision),
            "{revision}"
        );
    }
    // Each edit after the last one was observed makes exactly one new revision.
    for round in 3..=5u32 {
        edit_all(&d, &names, round);
        let now = wait_all_failed(&d, &names, round);
        for ((name, before), after) in names.iter().zip(&latest).zip(&now) {
            let number = |r: &str| {
                r.rsplit_once("-predictor-")
                    .and_then(|(_, n)| n.parse::<u32>().ok())
                    .unwrap_or_else(|| panic!("{name}: revision {r}"))
            };
            assert_eq!(number(after), number(before) + 1, "{name}: {before} then {after}");
        }
        latest = now;
    }
}

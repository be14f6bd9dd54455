//! Recurring runs: cron (KFP's 6-field form with seconds; 5-field accepted too) and
//! periodic triggers, start/end time, `max_concurrency`, `no_catchup`. The last fire
//! time is kept in the store, so a restart neither loses nor repeats a fire.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::api::{self, PipelineError, Pipelines};
use super::controller::{Controller, TERMINAL};
use super::store as pstore;
use crate::store::resources;

pub enum Trigger {
    Cron(String, Box<cron::Schedule>),
    Periodic(i64),
}

pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

pub fn time_field(body: &Value, key: &str) -> Result<Option<String>, PipelineError> {
    match &body[key] {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => {
            parse_time(s).map_err(|e| PipelineError::Invalid {
                field: key.to_string(),
                detail: e,
            })?;
            Ok(Some(s.clone()))
        }
        _ => Err(PipelineError::Invalid {
            field: key.to_string(),
            detail: "must be an RFC 3339 string".into(),
        }),
    }
}

fn bad(field: &str, detail: impl Into<String>) -> PipelineError {
    PipelineError::Invalid {
        field: field.to_string(),
        detail: detail.into(),
    }
}

impl Trigger {
    pub fn parse(v: &Value) -> Result<Trigger, PipelineError> {
        if let Some(c) = v.get("cron_schedule").filter(|c| !c.is_null()) {
            let expr = c["cron"]
                .as_str()
                .ok_or_else(|| bad("trigger.cron_schedule.cron", "missing"))?;
            let fields = expr.split_whitespace().count();
            // KFP (robfig/cron) takes seconds first; a classic 5-field line gets ":00".
            let full = match fields {
                5 => format!("0 {expr}"),
                6 | 7 => expr.to_string(),
                n => {
                    return Err(bad(
                        "trigger.cron_schedule.cron",
                        format!("{expr:?} has {n} fields; expected 6 (seconds first) or 5"),
                    ))
                }
            };
            let schedule = cron::Schedule::from_str(&full)
                .map_err(|e| bad("trigger.cron_schedule.cron", format!("{expr:?}: {e}")))?;
            return Ok(Trigger::Cron(expr.to_string(), Box::new(schedule)));
        }
        if let Some(p) = v.get("periodic_schedule").filter(|c| !c.is_null()) {
            let n = match &p["interval_second"] {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| bad("trigger.periodic_schedule.interval_second", "must be an integer"))?;
            if n < 1 {
                return Err(bad(
                    "trigger.periodic_schedule.interval_second",
                    "must be at least 1",
                ));
            }
            return Ok(Trigger::Periodic(n));
        }
        Err(bad("trigger", "needs cron_schedule or periodic_schedule"))
    }

    pub fn to_json(&self, start: Option<&str>, end: Option<&str>) -> Value {
        let mut inner = match self {
            Trigger::Cron(expr, _) => json!({"cron": expr}),
            Trigger::Periodic(n) => json!({"interval_second": n.to_string()}),
        };
        if let Some(s) = start {
            inner["start_time"] = json!(s);
        }
        if let Some(e) = end {
            inner["end_time"] = json!(e);
        }
        match self {
            Trigger::Cron(..) => json!({"cron_schedule": inner}),
            Trigger::Periodic(_) => json!({"periodic_schedule": inner}),
        }
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Trigger::Cron(_, s) => s.after(&after).next(),
            Trigger::Periodic(n) => Some(after + chrono::Duration::seconds(*n)),
        }
    }
}

/// One pass over the recurring runs: fire those that are due.
pub async fn tick(ctrl: &Controller) -> Result<(), PipelineError> {
    let store = ctrl.inner.store.clone();
    let p = Pipelines {
        store: store.clone(),
        data_dir: ctrl.inner.data_dir.clone(),
        controller: ctrl.clone(),
    };
    let all = store
        .call(|conn| resources::list(conn, pstore::RECURRING, None))
        .await?;
    if all.is_empty() {
        return Ok(());
    }
    let runs = store
        .call(|conn| resources::list(conn, pstore::RUN, None))
        .await?;
    let now = Utc::now();
    for rr in all {
        if rr.spec["mode"] == "DISABLE" {
            continue;
        }
        let trig = &rr.spec["trigger"];
        let Ok(trigger) = Trigger::parse(trig) else {
            continue;
        };
        let inner = trig
            .get("cron_schedule")
            .or_else(|| trig.get("periodic_schedule"))
            .cloned()
            .unwrap_or_default();
        let start = inner["start_time"].as_str().and_then(|s| parse_time(s).ok());
        let end = inner["end_time"].as_str().and_then(|s| parse_time(s).ok());
        let last = rr.status["last_fire"]
            .as_str()
            .and_then(|s| parse_time(s).ok())
            .unwrap_or(now);
        let from = match start {
            Some(s) if s > last => s - chrono::Duration::milliseconds(1),
            _ => last,
        };
        let Some(mut due) = trigger.next_after(from) else {
            continue;
        };
        if due > now || end.is_some_and(|e| due > e) {
            continue;
        }
        if rr.spec["no_catchup"] == true {
            // Only the latest missed fire runs.
            while let Some(n) = trigger.next_after(due).filter(|n| *n <= now) {
                due = n;
            }
        }
        let max = rr.spec["max_concurrency"]
            .as_str()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(1);
        let active = runs
            .iter()
            .filter(|r| r.spec["recurring_run_id"] == rr.name.as_str())
            .filter(|r| !TERMINAL.contains(&r.status["state"].as_str().unwrap_or("PENDING")))
            .count();
        if active >= max {
            continue;
        }
        let at = due.format("%Y%m%d%H%M%S").to_string();
        api::fire_recurring(&p, &rr, &at).await?;
        let uid = rr.uid.clone();
        let st = json!({"last_fire": due.to_rfc3339()});
        store
            .call(move |conn| resources::update_status(conn, &uid, &st, None))
            .await?;
    }
    Ok(())
}

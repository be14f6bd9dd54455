//! Recurring runs: cron (KFP's 6-field form with seconds; 5-field accepted too) and
//! periodic triggers, start/end time, `max_concurrency`, `no_catchup`. The last fire
//! time is kept in the store, so a restart neither loses nor repeats a fire.

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use super::api::{self, PipelineError, Pipelines};
use super::controller::{Controller, TERMINAL};
use super::protojson;
use super::store as pstore;
use crate::model::strict::MAX_SECONDS;
use crate::store::resources;

pub enum Trigger {
    Cron(String, Box<cron::Schedule>),
    Periodic(i64),
}

pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("must be an RFC 3339 time such as \"2030-01-01T00:00:00Z\", not {s:?} ({e})"))
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
            detail: format!(
                "must be an RFC 3339 time such as \"2030-01-01T00:00:00Z\", not {}",
                body[key]
            ),
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
            let n = protojson::int_in(p, "interval_second", "trigger.periodic_schedule", 1, MAX_SECONDS)
                .map_err(PipelineError::from)?
                .ok_or_else(|| bad("trigger.periodic_schedule.interval_second", "missing"))?;
            // Bounded by MAX_SECONDS, far inside i64.
            return Ok(Trigger::Periodic(i64::try_from(n).unwrap_or(i64::MAX)));
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

    /// The first fire time strictly after `after`; `None` past chrono's range (a
    /// stored interval may predate validation).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Trigger::Cron(_, s) => s.after(&after).next(),
            Trigger::Periodic(n) => after.checked_add_signed(TimeDelta::try_seconds(*n)?),
        }
    }

    /// The latest fire time at or before `now`, counting from `due` (itself at or
    /// before `now`): the one fire `no_catchup` runs after missed ones.
    fn latest_until(&self, mut due: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Trigger::Periodic(n) if *n > 0 => {
                // Arithmetic, not a walk: a short interval after a long stop would
                // take millions of steps.
                let missed = (now - due).num_seconds() / n;
                TimeDelta::try_seconds(missed.saturating_mul(*n))
                    .and_then(|d| due.checked_add_signed(d))
                    .unwrap_or(due)
            }
            _ => {
                // A cron that fires every second walks at most a day of fires; one that
                // fires less than daily has few fires to walk from `due`.
                let recent = now
                    .checked_sub_signed(TimeDelta::days(1))
                    .filter(|r| *r > due)
                    .and_then(|r| self.next_after(r))
                    .filter(|n| *n <= now);
                if let Some(r) = recent {
                    due = r;
                }
                while let Some(n) = self.next_after(due).filter(|n| *n <= now) {
                    due = n;
                }
                due
            }
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
        // One recurring run that cannot fire (stored before validation, or its run
        // refused) is marked with why and left; the others go on.
        if let Err(e) = tick_one(&p, &rr, &runs, now).await {
            let message = e.to_string();
            if rr.status["error"] != message.as_str() {
                tracing::warn!(recurring_run = %rr.name, error = %message, "recurring run cannot fire");
                let mut st = rr.status.clone();
                // RecurringRun.error is a string (recurring_run.proto).
                st["error"] = json!(message);
                let uid = rr.uid.clone();
                store
                    .call(move |conn| resources::update_status(conn, &uid, &st, None))
                    .await?;
            }
        }
    }
    Ok(())
}

/// Fires one recurring run if it is due.
async fn tick_one(
    p: &Pipelines,
    rr: &resources::Resource,
    runs: &[resources::Resource],
    now: DateTime<Utc>,
) -> Result<(), PipelineError> {
    let store = &p.store;
    {
        let trig = &rr.spec["trigger"];
        let trigger = Trigger::parse(trig)?;
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
            Some(s) if s > last => s.checked_sub_signed(TimeDelta::milliseconds(1)).unwrap_or(s),
            _ => last,
        };
        let Some(mut due) = trigger.next_after(from) else {
            return Ok(());
        };
        if due > now || end.is_some_and(|e| due > e) {
            return Ok(());
        }
        if rr.spec["no_catchup"] == true {
            // Only the latest missed fire runs.
            due = trigger.latest_until(due, now);
        }
        let max = protojson::int_in(&rr.spec, "max_concurrency", "", 1, MAX_CONCURRENCY)?.unwrap_or(1);
        let active = runs
            .iter()
            .filter(|r| r.spec["recurring_run_id"] == rr.name.as_str())
            .filter(|r| !TERMINAL.contains(&r.status["state"].as_str().unwrap_or("PENDING")))
            .count();
        if u64::try_from(active).unwrap_or(u64::MAX) >= max {
            return Ok(());
        }
        let at = due.format("%Y%m%d%H%M%S").to_string();
        api::fire_recurring(p, rr, &at).await?;
        let uid = rr.uid.clone();
        let st = json!({"last_fire": due.to_rfc3339()});
        store
            .call(move |conn| resources::update_status(conn, &uid, &st, None))
            .await?;
    }
    Ok(())
}

/// KFP's bound on `max_concurrency` (backend/src/apiserver/server: 1 to 10).
pub const MAX_CONCURRENCY: u64 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_triggers_name_their_field_and_extreme_times_never_panic() {
        for bad in [
            json!("9000000000000000000"),
            json!(-1),
            json!(0),
            json!(1e300),
            json!("NaN"),
            json!("x"),
        ] {
            let t = json!({"periodic_schedule": {"interval_second": bad}});
            let e = Trigger::parse(&t)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.starts_with(
                    "trigger.periodic_schedule.interval_second: must be an integer from 1 to 2147483647"
                ),
                "{e}"
            );
        }
        // A trigger stored before validation: no overflow, no fire.
        let far = Trigger::Periodic(i64::MAX);
        assert_eq!(far.next_after(Utc::now()), None);
        let max = DateTime::<Utc>::MAX_UTC;
        assert_eq!(Trigger::Periodic(1).next_after(max), None);
        // no_catchup after a long stop is arithmetic, not a walk.
        let every = Trigger::Periodic(1);
        let now = Utc::now();
        let due = now - TimeDelta::days(3650);
        let latest = every.latest_until(due, now);
        assert!(latest <= now && now - latest < TimeDelta::seconds(2));
    }
}

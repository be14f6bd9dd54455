//! systemd integration: `READY=1` once the daemon is ready, a one-line `STATUS=` a
//! person reads in `systemctl status hearth`, and watchdog pings when `WatchdogSec` is
//! set. Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

pub fn notify_ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn notify_status(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(status)]);
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn notify_watchdog() {
    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
}

/// Half the watchdog interval, as systemd recommends, when `WatchdogSec` is set.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|interval| interval / 2)
}

/// The status line: short, and worded for a person. `problems` ("name: detail" of
/// each part not ready, e.g. a dead or stuck controller) leads it when there are any.
pub fn status_line(
    problems: &[String],
    runtime: &str,
    gpus_in_use: usize,
    gpus_total: usize,
    simulated: bool,
    active: usize,
) -> String {
    let state = if problems.is_empty() {
        "ready".to_string()
    } else {
        format!("not ready ({})", problems.join("; "))
    };
    let sim = if simulated { " (simulated)" } else { "" };
    format!(
        "{state} · runtime {runtime} · GPUs {gpus_in_use}/{gpus_total}{sim} in use · {active} runs active"
    )
}

//! The systemd unit: `systemd-analyze verify` accepts it, and it keeps the settings the
//! daemon's design depends on.
//!
//! `verify` insists that ExecStart's binary exists. `/usr/local/bin/hearth` exists only
//! after `installer/install.sh`, so the test verifies a temporary copy of the unit whose
//! ExecStart points at the binary under test, and the committed unit as written when
//! `/usr/local/bin/hearth` is there too.

use std::path::Path;
use std::process::Command;

fn unit_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/hearth.service")).unwrap()
}

fn verify(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e}; install Debian's `systemd` package (scripts/test does)")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify {}:\n{stderr}",
        unit.display()
    );
    // Warnings do not fail verify; they fail this test.
    let unit_name = unit.file_name().unwrap().to_string_lossy();
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains(&*unit_name)).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns:\n{stderr}");
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let text = unit_text();
    assert!(text.contains("\nExecStart=/usr/local/bin/hearth serve\n"));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("hearth.service");
    let bin = hearth_e2e::hearth_bin();
    let text = text.replace(
        "ExecStart=/usr/local/bin/hearth",
        &format!("ExecStart={}", bin.display()),
    );
    std::fs::write(&copy, text).unwrap();
    verify(&copy);
    if Path::new("/usr/local/bin/hearth").exists() {
        verify(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/hearth.service"));
    }
}

#[test]
fn the_unit_keeps_what_the_design_needs() {
    let text = unit_text();
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for needed in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        // A daemon restart must not kill running workloads (k3s's unit does the same).
        "KillMode=process",
        "Delegate=yes",
        "LimitNOFILE=1048576",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            settings.contains(&needed),
            "systemd/hearth.service lacks {needed}"
        );
    }
    assert!(settings.iter().any(|l| l.starts_with("TimeoutStopSec=")));
    // Settings that would break GPU workloads started by the daemon.
    for forbidden in [
        "PrivateDevices=yes",
        "MemoryDenyWriteExecute=yes",
        "ProtectSystem=strict",
        "DevicePolicy=closed",
    ] {
        assert!(
            !settings.contains(&forbidden),
            "{forbidden} would break GPU workloads"
        );
    }
}

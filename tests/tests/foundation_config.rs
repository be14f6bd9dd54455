//! Configuration: a bad file or variable stops start-up naming what is wrong, and
//! `hearth config show` prints the effective configuration (defaults < file < env < flags).

use std::process::Output;

use hearth_e2e::{hearth_command, spawn_daemon_with, Options};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = hearth_command();
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run hearth")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn unknown_key_stops_start_up_naming_key_and_file() {
    let data = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("colour = \"red\"\n", "colour"),
        ("[gpu]\nsimulte = 2\n", "simulte"),
        ("[metrix]\npublic = true\n", "metrix"),
    ] {
        let file = config_file(text);
        let path = file.path().to_str().unwrap();
        let out = run(
            &[
                "serve",
                "--config",
                path,
                "--data-dir",
                data.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
        );
        assert!(!out.status.success(), "started with {text:?}");
        let err = stderr(&out);
        assert!(err.contains(key), "{err}");
        assert!(err.contains(path), "{err}");
        assert!(
            !data.path().join("hearth.db").exists(),
            "a bad config still opened the store"
        );
    }
}

#[test]
fn bad_values_are_refused_naming_where_they_came_from() {
    let data = tempfile::tempdir().unwrap();
    let data = data.path().to_str().unwrap();
    let empty = config_file("");
    let empty = empty.path().to_str().unwrap();
    let out = run(
        &["serve", "--config", empty, "--data-dir", data],
        &[("HEARTH_MAX_BODY_BYTES", "lots")],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("HEARTH_MAX_BODY_BYTES"), "{}", stderr(&out));

    let out = run(
        &["serve", "--config", empty, "--data-dir", data],
        &[("HEARTH_LISTEN", "nowhere")],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("HEARTH_LISTEN"), "{}", stderr(&out));

    let out = run(
        &[
            "serve",
            "--config",
            empty,
            "--data-dir",
            data,
            "--listen",
            "nowhere:x",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));

    let file = config_file("runtime = \"podman\"\n");
    let path = file.path().to_str().unwrap();
    let out = run(&["serve", "--config", path, "--data-dir", data], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(path) && err.contains("podman"), "{err}");

    let file = config_file("max_body_bytes = 10\n");
    let out = run(
        &[
            "serve",
            "--config",
            file.path().to_str().unwrap(),
            "--data-dir",
            data,
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("max_body_bytes"), "{}", stderr(&out));

    let missing = run(
        &[
            "serve",
            "--config",
            "/nonexistent/hearth.toml",
            "--data-dir",
            data,
        ],
        &[],
    );
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("/nonexistent/hearth.toml"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn config_show_reflects_precedence() {
    let file = config_file("log_level = \"warn\"\nmax_body_bytes = 2048\nshutdown_timeout_seconds = 7\n[gpu]\nsimulate = 1\nrefresh_seconds = 9\n");
    let path = file.path().to_str().unwrap();
    let out = run(
        &[
            "config",
            "show",
            "--config",
            path,
            "--log-level",
            "debug",
            "--data-dir",
            "/tmp/hearth-flag",
        ],
        &[
            ("HEARTH_MAX_BODY_BYTES", "4096"),
            ("HEARTH_LOG_LEVEL", "error"),
            ("HEARTH_GPU_SIMULATE", "3"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let shown: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(text.contains(path), "the file used is not named:\n{text}");
    assert_eq!(
        shown["log_level"].as_str(),
        Some("debug"),
        "flag beats env and file"
    );
    assert_eq!(shown["max_body_bytes"].as_integer(), Some(4096), "env beats file");
    assert_eq!(
        shown["shutdown_timeout_seconds"].as_integer(),
        Some(7),
        "file beats default"
    );
    assert_eq!(shown["data_dir"].as_str(), Some("/tmp/hearth-flag"));
    assert_eq!(shown["gpu"]["simulate"].as_integer(), Some(3));
    assert_eq!(shown["gpu"]["refresh_seconds"].as_integer(), Some(9));
    assert_eq!(shown["listen"].as_str(), Some("127.0.0.1:8470"), "default");
    assert_eq!(shown["runtime"].as_str(), Some("process"));

    // HEARTH_CONFIG names the file when --config is absent.
    let out = run(&["config", "show"], &[("HEARTH_CONFIG", path)]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("shutdown_timeout_seconds = 7"), "{text}");
}

#[test]
fn the_daemon_uses_the_effective_config() {
    let d = spawn_daemon_with(
        Options::default()
            .config("max_body_bytes = 4096\n[gpu]\nsimulate = 1")
            .env("HEARTH_GPU_SIMULATE", "3"),
    );
    let r = d.get("/hearth/v1/node", d.admin());
    assert_eq!(r.body["gpus"]["devices"].as_array().unwrap().len(), 3, "{r}");
    let r = d.send_body(
        reqwest::Method::POST,
        "/hearth/v1/tokens",
        d.admin(),
        "application/json",
        "x".repeat(5000),
    );
    r.assert_problem(413, "payload_too_large");
    assert!(r.body["detail"].as_str().unwrap().contains("4096"), "{r}");
}

/// `hearth config runtimes` lists what this build runs workloads with (the installer
/// asks it); a runtime it does not list is refused at start naming the config key and
/// the flag, from the file as from the flag.
#[test]
fn unavailable_runtime_is_refused_clearly() {
    let listed = run(&["config", "runtimes"], &[]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let available: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(available.contains(&"process".to_string()), "{available:?}");
    // Data-driven: whichever runtimes this build lacks (docker and k3s while they are
    // being built) must be refused.
    let missing: Vec<&str> = ["docker", "k3s"]
        .into_iter()
        .filter(|r| !available.iter().any(|a| a == r))
        .collect();
    for runtime in missing {
        let data = tempfile::tempdir().unwrap();
        let from_file = config_file(&format!("runtime = \"{runtime}\"\n"));
        let empty = config_file("");
        for (config, flag) in [(&from_file, None), (&empty, Some(runtime))] {
            let mut args = vec![
                "serve",
                "--config",
                config.path().to_str().unwrap(),
                "--data-dir",
                data.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--serving-listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
            ];
            if let Some(flag) = flag {
                args.extend(["--runtime", flag]);
            }
            let out = run(&args, &[]);
            assert!(!out.status.success());
            let said = stderr(&out);
            for needle in [
                format!("runtime = \"{runtime}\""),
                "config.toml".to_string(),
                "--runtime process".to_string(),
                format!("it provides: {}", available.join(", ")),
            ] {
                assert!(said.contains(&needle), "wanted {needle:?}: {said}");
            }
        }
    }
}

/// The data plane is sized apart from the control plane: `serving.workers` threads
/// (one per CPU by default), while the API keeps at most 4.
#[test]
fn serving_workers_sizes_the_data_plane() {
    // The API's actix workers and the data plane's own threads, by name.
    let threads = |pid: u32, wanted: &str| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
            .filter(|name| name.trim() == wanted)
            .count()
    };
    // Workers start beside the listener; give them a moment to appear.
    let settled = |pid: u32, wanted: &str, want: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let seen = threads(pid, wanted);
            if seen == want || std::time::Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let cpus = std::thread::available_parallelism().unwrap().get();
    let api_workers = cpus.min(4);
    let d = spawn_daemon_with(Options::default().config("[serving]\nworkers = 3"));
    assert_eq!(settled(d.pid(), "hearth-serving", 3), 3);
    assert_eq!(settled(d.pid(), "actix-rt|system", api_workers), api_workers);
    let d = spawn_daemon_with(Options::default());
    assert_eq!(settled(d.pid(), "hearth-serving", cpus), cpus);
    let empty = config_file("");
    let refused = run(
        &["config", "show", "--config", empty.path().to_str().unwrap()],
        &[("HEARTH_SERVING_WORKERS", "5000")],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("serving.workers"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused_and_changes_nothing() {
    let d = spawn_daemon_with(Options::default());
    let kubeconfig = std::fs::read_to_string(d.data_dir.join("kubeconfig")).unwrap();
    let addr = std::fs::read_to_string(d.data_dir.join("hearth.addr")).unwrap();
    let data = d.data_dir.to_str().unwrap();
    let out = run(
        &[
            "serve",
            "--data-dir",
            data,
            "--listen",
            "127.0.0.1:0",
            "--serving-listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(!out.status.success(), "a second daemon started on {data}");
    let err = stderr(&out);
    assert!(err.contains("in use by another hearth serve"), "{err}");
    assert!(err.contains(data), "{err}");
    assert_eq!(
        std::fs::read_to_string(d.data_dir.join("kubeconfig")).unwrap(),
        kubeconfig,
        "the refused daemon rewrote the kubeconfig"
    );
    assert_eq!(
        std::fs::read_to_string(d.data_dir.join("hearth.addr")).unwrap(),
        addr,
        "the refused daemon touched the address file"
    );
    assert_eq!(d.get("/readyz", None).status, 200);
}

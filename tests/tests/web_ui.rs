//! The web page at `/`: a login page without credentials (never the browser's Basic
//! prompt), the dashboard with them (a session cookie or a token), served from the
//! binary with a self-only CSP, and calling only routes that the OpenAPI document
//! has, so the page cannot drift from the API unnoticed. The browser flows themselves
//! are in tests/browser/dashboard.mjs (scripts/test runs it).

use std::time::Duration;

use hearth_e2e::{openapi_operations, spawn_daemon, spawn_daemon_with, Daemon, Options, Reply};
use reqwest::Method;

/// What a browser sends after the prompt: any user name, the token as the password.
fn basic(d: &Daemon, method: Method, path: &str, token: &str) -> Reply {
    d.send(
        d.client
            .request(method, d.url(path))
            .basic_auth("anyone", Some(token)),
    )
}

fn challenges(r: &Reply) -> Vec<String> {
    r.headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

/// The asset paths the HTML document loads (`src="..."` and `href="..."`).
fn referenced_paths(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attr) {
            let rest = &html[at + attr.len()..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_string());
            }
        }
    }
    out
}

/// What `/` and each asset answer without credentials: the login page and its own
/// assets, and a 401 without a `Basic` challenge (which would pop up the browser's
/// password prompt) for everything else.
#[test]
fn without_credentials_the_page_is_the_login_page_and_nothing_prompts() {
    let d = spawn_daemon();
    for path in [
        "/ui/app.js",
        "/ui/charts.js",
        "/ui/dag.js",
        "/ui/uPlot.iife.min.js",
        "/ui/dagre.esm.js",
    ] {
        let r = d.get(path, None);
        r.assert_problem(401, "unauthorized");
        let c = challenges(&r);
        assert!(
            c.iter().all(|c| !c.starts_with("Basic")),
            "{path}: a Basic challenge in {c:?}"
        );
        assert!(c.iter().any(|c| c.starts_with("Bearer")), "{path}: {c:?}");
    }
    for path in ["/ui/login.js", "/ui/app.css", "/ui/favicon.svg"] {
        assert_eq!(d.get(path, None).status, 200, "{path}");
    }
    for r in [
        d.get("/", None),
        basic(&d, Method::GET, "/", "not-a-token"),
        d.get("/", Some("hth_nope")),
    ] {
        assert_eq!(r.status, 200, "{r}");
        assert!(challenges(&r).is_empty(), "{r}");
        assert!(r.text.contains("id=\"login-form\""), "{r}");
        assert!(r.text.contains("<script src=\"/ui/login.js\""), "{r}");
        assert!(
            !r.text.contains("/ui/app.js"),
            "the login page loads the dashboard: {r}"
        );
        assert_eq!(r.header("vary"), Some("Cookie, Authorization"));
    }

    let r = basic(&d, Method::GET, "/", &d.admin_token);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.content_type(), "text/html; charset=utf-8", "{r}");
    assert!(
        r.text.contains("<script type=\"module\" src=\"/ui/app.js\""),
        "{r}"
    );
    let csp = r.header("content-security-policy").unwrap_or("");
    for needed in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(needed), "CSP {csp:?} lacks {needed:?}");
    }
    assert!(!csp.contains("unsafe-"), "CSP {csp:?}");
    assert!(!csp.contains("http"), "CSP {csp:?} names another origin");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let cache = r.header("cache-control").unwrap_or("");
    assert!(
        cache.contains("no-cache") && cache.contains("private"),
        "{cache:?}"
    );

    // Revalidation: the same ETag answers 304, with the security headers still on.
    let etag = r.header("etag").unwrap_or("").to_string();
    assert!(etag.starts_with('"'), "{etag:?}");
    let again = d.send(
        d.client
            .get(d.url("/"))
            .basic_auth("x", Some(&d.admin_token))
            .header("if-none-match", &etag),
    );
    assert_eq!(again.status, 304, "{again}");
    assert!(again.text.is_empty());
    assert_eq!(again.header("x-content-type-options"), Some("nosniff"));
    // The login page's ETag is another, so a cached login page is not kept after login.
    let login_etag = d.get("/", None).header("etag").unwrap_or("").to_string();
    assert_ne!(login_etag, etag);

    // A bearer token works too, and so does an ordinary user's token.
    assert!(d.get("/", d.admin()).text.contains("/ui/app.js"));
    let alice = d.create_user("alice");
    assert!(basic(&d, Method::GET, "/", &alice).text.contains("/ui/app.js"));
}

/// The session cookie's value in a `Set-Cookie` answer.
fn session_cookie(r: &Reply) -> (String, String) {
    let set = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("hearth_session="))
        .unwrap_or_else(|| panic!("no session cookie: {r}"))
        .to_string();
    let value = set["hearth_session=".len()..]
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    (value, set)
}

fn with_cookie(d: &Daemon, method: Method, path: &str, cookie: &str) -> reqwest::blocking::RequestBuilder {
    d.client
        .request(method, d.url(path))
        .header("cookie", format!("hearth_session={cookie}"))
}

/// Login, the session it opens, CSRF defences and logout, as the login page and the
/// dashboard use them.
#[test]
fn a_login_opens_a_session_that_is_csrf_safe_namespaced_and_ends_at_logout() {
    let d = spawn_daemon();
    let alice = d.create_user("alice");
    let bob = d.create_user("bob");
    let login = |token: &str| {
        d.send(
            d.client
                .post(d.url("/hearth/v1/session"))
                .json(&serde_json::json!({ "token": token })),
        )
    };
    let bad = login("hth_wrong");
    bad.assert_problem(401, "unauthorized");
    assert!(challenges(&bad).iter().all(|c| !c.starts_with("Basic")), "{bad}");

    let ok = login(&alice);
    assert_eq!(ok.status, 201, "{ok}");
    let (cookie, set) = session_cookie(&ok);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP cannot keep a Secure cookie: {set}"
    );

    // The cookie opens the dashboard and the API, for alice's namespace only.
    let page = d.send(with_cookie(&d, Method::GET, "/", &cookie));
    assert!(page.text.contains("/ui/app.js"), "{page}");
    let me = d.send(with_cookie(&d, Method::GET, "/hearth/v1/whoami", &cookie));
    assert_eq!(me.body["user"], "alice", "{me}");
    for path in [
        "/apis/batch/v1/namespaces/bob/jobs",
        "/api/v1/namespaces/bob/pods",
    ] {
        let r = d.send(with_cookie(&d, Method::GET, path, &cookie));
        assert_eq!(r.status, 403, "{path}: {r}");
    }
    let pods = d.send(with_cookie(&d, Method::GET, "/api/v1/pods", &cookie));
    assert_eq!(pods.status, 200, "{pods}");
    let job =
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: mine}\nspec:\n  template:\n    spec:\n      \
               restartPolicy: Never\n      containers:\n      - name: m\n        image: busybox\n        \
               command: [sh, -c, 'sleep 30']\n";
    let bobs = d.send(
        d.client
            .post(d.url("/apis/batch/v1/namespaces/bob/jobs"))
            .bearer_auth(&bob)
            .header("content-type", "application/yaml")
            .body(job.replace("mine", "secret")),
    );
    assert_eq!(bobs.status, 201, "{bobs}");
    let pods = d.send(with_cookie(&d, Method::GET, "/api/v1/pods", &cookie));
    assert!(
        !pods.text.contains("secret"),
        "alice's cookie lists bob's pod: {pods}"
    );

    // A state change by cookie needs the CSRF header, and a foreign Origin is refused
    // even with it (and even with a bearer token).
    let create = |extra: &[(&str, &str)]| {
        let mut req = with_cookie(&d, Method::POST, "/apis/batch/v1/namespaces/alice/jobs", &cookie)
            .header("content-type", "application/yaml")
            .body(job.to_string());
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        d.send(req)
    };
    let refused = create(&[]);
    assert_eq!(refused.status, 403, "{refused}");
    assert!(refused.text.contains("x-hearth-csrf"), "{refused}");
    let foreign = create(&[("x-hearth-csrf", "1"), ("origin", "https://evil.example")]);
    assert_eq!(foreign.status, 403, "{foreign}");
    let foreign_bearer = d.send(
        d.client
            .delete(d.url("/apis/batch/v1/namespaces/alice/jobs/mine"))
            .bearer_auth(&alice)
            .header("origin", "http://evil.example"),
    );
    assert_eq!(foreign_bearer.status, 403, "{foreign_bearer}");
    let own_origin = format!(
        "http://{}",
        d.url("/").trim_start_matches("http://").trim_end_matches('/')
    );
    let created = create(&[("x-hearth-csrf", "1"), ("origin", own_origin.as_str())]);
    assert_eq!(created.status, 201, "{created}");
    // A bearer client (no cookie, no Origin) needs no CSRF header, as before.
    let deleted = d.send(
        d.client
            .delete(d.url("/apis/batch/v1/namespaces/alice/jobs/mine"))
            .bearer_auth(&alice),
    );
    assert_eq!(deleted.status, 200, "{deleted}");
    // A cross-site login is refused too (login CSRF).
    let cross = d.send(
        d.client
            .post(d.url("/hearth/v1/session"))
            .header("origin", "http://evil.example")
            .json(&serde_json::json!({ "token": alice })),
    );
    assert_eq!(cross.status, 403, "{cross}");

    // Logout ends the session on the server: the same cookie no longer works, and the
    // page is the login page again.
    let out = d.send(with_cookie(&d, Method::DELETE, "/hearth/v1/session", &cookie));
    assert_eq!(out.status, 204, "{out}");
    let (cleared, _) = session_cookie(&out);
    assert!(cleared.is_empty());
    let after = d.send(with_cookie(&d, Method::GET, "/hearth/v1/whoami", &cookie));
    after.assert_problem(401, "unauthorized");
    let page = d.send(with_cookie(&d, Method::GET, "/", &cookie));
    assert!(page.text.contains("id=\"login-form\""), "{page}");
}

#[test]
fn assets_are_served_with_their_types_and_nothing_else_is() {
    let d = spawn_daemon();
    let t = d.admin_token.clone();
    let html = basic(&d, Method::GET, "/", &t).text;
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    let mut seen = Vec::new();
    for path in referenced_paths(&html) {
        if path.starts_with("#/") {
            continue; // the page's own tabs
        }
        assert!(
            path.starts_with("/ui/") || path.starts_with("/swagger-ui/"),
            "the page loads {path:?}: only this daemon's /ui/ assets may be loaded"
        );
        if path.starts_with("/ui/") {
            seen.push(path);
        }
    }
    for (path, content_type) in [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
        ("/ui/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("/ui/uPlot.min.css", "text/css; charset=utf-8"),
    ] {
        assert!(seen.iter().any(|p| p == path), "the page does not load {path}");
        let r = basic(&d, Method::GET, path, &t);
        assert_eq!(r.status, 200, "{path}: {r}");
        assert_eq!(r.content_type(), content_type, "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert!(r.header("content-security-policy").is_some(), "{path}");
        assert!(r.header("etag").is_some(), "{path}");
        // No CDN, no external font, no other origin (the SVG's xmlns is a name,
        // not a load).
        // Vendored libraries are checked byte for byte against their npm packages
        // (tests/browser/vendored.mjs); uPlot names the SVG namespace in its code.
        if !path.ends_with(".svg") && !path.contains("uPlot") {
            for external in ["http://", "https://", "//cdn", "@import"] {
                assert!(!r.text.contains(external), "{path} mentions {external:?}");
            }
        }
        if path.ends_with(".css") {
            assert!(!r.text.contains("url("), "{path} loads something");
        }
    }
    // The modules the page imports: the SVG namespace is a name, not a load.
    for (path, content_type) in [
        ("/ui/charts.js", "text/javascript; charset=utf-8"),
        ("/ui/dag.js", "text/javascript; charset=utf-8"),
        ("/ui/dagre.esm.js", "text/javascript; charset=utf-8"),
        ("/ui/LICENSE.uplot", "text/plain; charset=utf-8"),
        ("/ui/LICENSE.dagre", "text/plain; charset=utf-8"),
    ] {
        let r = basic(&d, Method::GET, path, &t);
        assert_eq!(r.status, 200, "{path}: {r}");
        assert_eq!(r.content_type(), content_type, "{path}");
        let text = r.text.replace("http://www.w3.org/2000/svg", "");
        if path.ends_with(".js") && !path.contains("dagre") {
            for external in ["http://", "https://", "//cdn"] {
                assert!(!text.contains(external), "{path} mentions {external:?}");
            }
        }
    }
    // Tokens stay out of storage that outlives the page and out of URLs.
    let mut js = basic(&d, Method::GET, "/ui/app.js", &t).text;
    js.push_str(&basic(&d, Method::GET, "/ui/login.js", &t).text);
    js.push_str(&basic(&d, Method::GET, "/ui/charts.js", &t).text);
    js.push_str(&basic(&d, Method::GET, "/ui/dag.js", &t).text);
    for forbidden in [
        "localStorage",
        "sessionStorage",
        "document.cookie",
        "token=",
        "innerHTML",
        "eval(",
    ] {
        assert!(!js.contains(forbidden), "app.js uses {forbidden:?}");
    }

    basic(&d, Method::GET, "/ui/missing.js", &t).assert_problem(404, "not_found");
    basic(&d, Method::GET, "/ui/", &t).assert_problem(404, "route_not_found");
    basic(&d, Method::GET, "/ui/a/app.js", &t).assert_problem(404, "route_not_found");
    for (method, path) in [(Method::POST, "/"), (Method::DELETE, "/ui/app.js")] {
        let r = basic(&d, method.clone(), path, &t);
        r.assert_problem(405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some("GET"), "{method} {path}: {r}");
    }
}

/// One entry of the script's `API` table.
#[derive(Debug)]
struct Call {
    key: String,
    method: String,
    path: String,
    optional: bool,
}

/// The `API` table between the `// API-TABLE-BEGIN` and `// API-TABLE-END` markers,
/// one `key: { method: "GET", path: "/..." [, optional: true] },` a line; and the
/// script without it.
fn api_table(js: &str) -> (Vec<Call>, String) {
    let begin = js
        .find("// API-TABLE-BEGIN")
        .expect("app.js has no API-TABLE-BEGIN marker");
    let end = js
        .find("// API-TABLE-END")
        .expect("app.js has no API-TABLE-END marker");
    let quoted = |line: &str, field: &str| -> Option<String> {
        let start = line.find(&format!("{field}: \""))? + field.len() + 3;
        let len = line[start..].find('"')?;
        Some(line[start..start + len].to_string())
    };
    let mut calls = Vec::new();
    for line in js[begin..end].lines() {
        let line = line.trim();
        if !line.contains("path:") {
            continue;
        }
        let key = line.split(':').next().unwrap_or("").trim().to_string();
        let method = quoted(line, "method").unwrap_or_else(|| panic!("no method in {line:?}"));
        let path = quoted(line, "path").unwrap_or_else(|| panic!("no path in {line:?}"));
        calls.push(Call {
            key,
            method,
            path,
            optional: line.contains("optional: true"),
        });
    }
    let rest = format!("{}{}", &js[..begin], &js[end..]);
    (calls, rest)
}

#[test]
fn every_url_the_script_calls_is_in_the_openapi_document() {
    let d = spawn_daemon();
    let t = d.admin_token.clone();
    let js = basic(&d, Method::GET, "/ui/app.js", &t).text;
    let (calls, rest) = api_table(&js);
    assert!(calls.len() >= 10, "too few entries in the API table: {calls:?}");

    // Outside the table the script names no route and builds every fetch URL with
    // url(), which only fills in the table's templates.
    for literal in ["\"/api", "'/api", "`/api", "\"/openapi", "`/openapi"] {
        assert!(
            !rest.contains(literal),
            "app.js names a route outside the API table: {literal}"
        );
    }
    for (at, _) in rest.match_indices("fetch(") {
        assert!(
            rest[at + "fetch(".len()..].starts_with("url("),
            "a fetch in app.js does not take url(...): {}",
            &rest[at..(at + 60).min(rest.len())]
        );
    }

    let doc = d.get("/openapi.json", d.admin()).body;
    let ops: Vec<(String, String)> = openapi_operations(&doc)
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect();
    let mut checked = 0;
    for call in &calls {
        if call.path == "/openapi.json" {
            // The document itself is not one of its own paths.
            assert_eq!(call.method, "GET");
            assert_eq!(basic(&d, Method::GET, &call.path, &t).status, 200);
            continue;
        }
        let documented = ops.iter().any(|(m, p)| *m == call.method && *p == call.path);
        let path_known = ops.iter().any(|(_, p)| *p == call.path);
        if call.optional && !path_known {
            // The page renders that section only when /openapi.json has the route.
            assert!(
                js.contains(&format!("API.{}.path", call.key)),
                "optional {} is not gated on /openapi.json",
                call.key
            );
            continue;
        }
        assert!(
            documented,
            "app.js calls {} {} ({}), which /openapi.json does not list",
            call.method, call.path, call.key
        );
        checked += 1;
    }
    assert!(checked >= 10, "{checked}");
}

/// The page's job box and log viewer, as the browser drives them: YAML with Basic
/// credentials, a refused document's `Status` `message`, and the streamed log.
#[test]
fn the_job_box_and_the_log_viewer_work_with_basic_credentials() {
    let d = spawn_daemon();
    let t = d.admin_token.clone();
    let post = |yaml: &str| {
        d.send(
            d.client
                .post(d.url("/apis/batch/v1/namespaces/admin/jobs"))
                .basic_auth("anyone", Some(&t))
                .header("content-type", "application/yaml")
                .body(yaml.to_string()),
        )
    };
    let refused = post("kind: Job\n");
    assert!((400..500).contains(&refused.status), "{refused}");
    assert!(
        refused.body["message"].as_str().is_some_and(|s| !s.is_empty()),
        "{refused}"
    );

    let job = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      \
               restartPolicy: Never\n      containers:\n      - name: m\n        image: busybox\n        \
               command: [sh, -c, 'echo one; sleep 0.3; echo two']\n";
    let created = post(job);
    assert!(created.status == 201 || created.status == 200, "{created}");

    let logs = d.send(
        d.client
            .get(d.url("/hearth/v1/namespaces/admin/jobs/web/logs?follow=true"))
            .basic_auth("anyone", Some(&t))
            .timeout(Duration::from_secs(30)),
    );
    assert_eq!(logs.status, 200, "{logs}");
    assert!(
        logs.text.contains("one\n") && logs.text.contains("two\n"),
        "{logs}"
    );
}

/// What the overview's live GPU cards read from the watches: each GPU's last sample on
/// the node (`hearth.dev/gpus`) and the GPUs a pod holds (`hearth.dev/gpu-uuids`).
#[test]
fn the_node_carries_gpu_samples_and_a_pod_names_the_gpus_it_holds() {
    let d = hearth_e2e::spawn_daemon_with(hearth_e2e::Options::default().config("[gpu]\nsimulate = 2\n"));
    let nodes = d.get("/api/v1/nodes", d.admin());
    assert_eq!(nodes.status, 200, "{nodes}");
    let raw = nodes.body["items"][0]["metadata"]["annotations"]["hearth.dev/gpus"]
        .as_str()
        .unwrap_or_else(|| panic!("no hearth.dev/gpus: {nodes}"))
        .to_string();
    let gpus: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let gpus = gpus.as_array().unwrap();
    assert_eq!(gpus.len(), 2, "{raw}");
    for g in gpus {
        for field in [
            "uuid",
            "utilization_percent",
            "memory_used_bytes",
            "memory_total_bytes",
            "temperature_celsius",
        ] {
            assert!(!g[field].is_null(), "{field} missing in {g}");
        }
        assert_eq!(g["simulated"], true, "{g}");
    }

    let job =
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: holder}\nspec:\n  template:\n    spec:\n      \
               restartPolicy: Never\n      containers:\n      - name: m\n        image: busybox\n        \
               command: [sh, -c, 'sleep 30']\n        resources: {limits: {nvidia.com/gpu: 1}}\n";
    let created = d.post_yaml("/apis/batch/v1/namespaces/admin/jobs", d.admin(), job);
    assert_eq!(created.status, 201, "{created}");
    let pods = d.wait_until("/api/v1/namespaces/admin/pods", Duration::from_secs(20), |r| {
        r.body["items"][0]["status"]["phase"] == "Running"
    });
    let held = pods.body["items"][0]["metadata"]["annotations"]["hearth.dev/gpu-uuids"]
        .as_str()
        .unwrap_or_else(|| panic!("no hearth.dev/gpu-uuids: {pods}"))
        .to_string();
    assert!(
        gpus.iter().any(|g| g["uuid"] == held.as_str()),
        "{held} is none of {raw}"
    );
}

/// Sessions end server-side: past `session_ttl_seconds` a cookie is refused (the login
/// page for `/`, 401 for the API), and after logout the same cookie, replayed, opens
/// nothing, while the user's other sessions live on.
#[test]
fn an_expired_or_logged_out_session_is_refused() {
    let d = spawn_daemon_with(Options::default().config("session_ttl_seconds = 2"));
    let alice = d.create_user("alice");
    let login = || {
        let r = d.send(
            d.client
                .post(d.url("/hearth/v1/session"))
                .json(&serde_json::json!({ "token": alice })),
        );
        assert_eq!(r.status, 201, "{r}");
        assert_eq!(r.body["expires_in_seconds"], 2, "{r}");
        let (cookie, set) = session_cookie(&r);
        assert!(set.contains("Max-Age=2"), "{set}");
        cookie
    };

    // Expiry: the cookie works, then (its lifetime past) is refused, although the
    // client still sends it (a browser keeping a cookie past Max-Age, or a replay).
    let cookie = login();
    let me = d.send(with_cookie(&d, Method::GET, "/hearth/v1/whoami", &cookie));
    assert_eq!(me.body["user"], "alice", "{me}");
    let page = d.send(with_cookie(&d, Method::GET, "/", &cookie));
    assert!(page.text.contains("/ui/app.js"), "{page}");
    std::thread::sleep(Duration::from_millis(2500));
    d.send(with_cookie(&d, Method::GET, "/hearth/v1/whoami", &cookie))
        .assert_problem(401, "unauthorized");
    // Kubernetes paths answer a `Status`.
    let pods = d.send(with_cookie(&d, Method::GET, "/api/v1/pods", &cookie));
    assert_eq!(pods.status, 401, "{pods}");
    assert_eq!(pods.body["reason"], "Unauthorized", "{pods}");
    let page = d.send(with_cookie(&d, Method::GET, "/", &cookie));
    assert_eq!(page.status, 200, "{page}");
    assert!(page.text.contains("id=\"login-form\""), "{page}");
    assert!(!page.text.contains("/ui/app.js"), "{page}");

    // Logout: the cookie it ended stays dead when replayed, for reads and for
    // state changes with the CSRF header; a second session of the same user is not
    // touched.
    let first = login();
    let second = login();
    let out =
        d.send(with_cookie(&d, Method::DELETE, "/hearth/v1/session", &first).header("x-hearth-csrf", "1"));
    assert_eq!(out.status, 204, "{out}");
    d.send(with_cookie(&d, Method::GET, "/hearth/v1/whoami", &first))
        .assert_problem(401, "unauthorized");
    let replayed = d.send(
        with_cookie(&d, Method::POST, "/apis/batch/v1/namespaces/alice/jobs", &first)
            .header("x-hearth-csrf", "1")
            .header("content-type", "application/json")
            .body("{}"),
    );
    assert_eq!(replayed.status, 401, "{replayed}");
    let page = d.send(with_cookie(&d, Method::GET, "/", &first));
    assert!(page.text.contains("id=\"login-form\""), "{page}");
    let me = d.send(with_cookie(&d, Method::GET, "/hearth/v1/whoami", &second));
    assert_eq!(me.body["user"], "alice", "{me}");
}

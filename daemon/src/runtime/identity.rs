//! Which Unix user a namespace's workloads run as, and the few root-only steps that go
//! with it.
//!
//! Two modes, decided once at start-up from the daemon's own user:
//! - **isolated** (the daemon runs as root, `[isolation] enabled`): each namespace's
//!   workloads run as a Unix user of that namespace: the account `[isolation] accounts`
//!   maps it to, else the system user `<user_prefix><namespace>` that Hearth creates with
//!   the distribution's `groupadd`/`useradd` (they take the passwd/shadow locks and keep
//!   nscd/sssd caches right, which writing `/etc/passwd` ourselves would not), with a uid
//!   and gid from `uid_range` and its home in `<data-dir>/home/<namespace>` (0700).
//!   The data dir is 0711: a workload can reach the directories handed over to its own
//!   user ([`Identities::hand_over`]) and can neither list nor read anything else.
//! - **shared** (an ordinary user runs the daemon, or `enabled = false`): workloads run as
//!   the daemon's user; namespaces are not isolated from each other.
//!
//! Lookups and creations are cached per namespace, so a job pays for them once.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::IsolationConfig;
use crate::model::strict::{only_keys, FieldError};

/// The Unix identity a workload runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the account's own, `video`/`render` where they exist (the
    /// groups that own GPU device nodes), and `fsGroup`.
    pub groups: Vec<u32>,
    pub home: PathBuf,
    /// `SHELL` for the workload: the account's, or `/bin/sh` for a no-login account.
    pub shell: String,
}

/// The part of Kubernetes' `PodSecurityContext` and container `SecurityContext` that
/// Hearth honours, merged as Kubernetes merges them (the container's fields win).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityContext {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub fs_group: Option<u32>,
    pub run_as_non_root: Option<bool>,
    /// Where the fields came from, for error messages: `spec.template.spec...`.
    pub path: String,
}

const NOT_HONOURED: &str = "Hearth honours runAsUser, runAsGroup, fsGroup and runAsNonRoot (and allowPrivilegeEscalation: false, privileged: false); remove it";

fn uid_field(value: &Value, key: &str, path: &str) -> Result<Option<u32>, FieldError> {
    crate::model::strict::opt_u64_in(value, key, path, 0, u64::from(u32::MAX - 1))
        .map(|v| v.and_then(|n| u32::try_from(n).ok()))
}

fn bool_field(value: &Value, key: &str, path: &str) -> Result<Option<bool>, FieldError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(FieldError::invalid(
            format!("{path}.{key}"),
            format!("must be true or false, not {v}"),
        )),
    }
}

impl SecurityContext {
    /// From a pod spec at `pod_path` and its container at `container_path` (each may
    /// hold a `securityContext`); `None` when neither does. Fields Hearth cannot honour
    /// are refused by name.
    pub fn parse(
        pod: &Value,
        pod_path: &str,
        container: &Value,
        container_path: &str,
    ) -> Result<Option<SecurityContext>, FieldError> {
        let mut out = SecurityContext::default();
        let mut any = false;
        if let Some(sc) = pod.get("securityContext").filter(|v| !v.is_null()) {
            let path = format!("{pod_path}.securityContext");
            only_keys(
                sc,
                &path,
                &["runAsUser", "runAsGroup", "fsGroup", "runAsNonRoot"],
                NOT_HONOURED,
            )?;
            out.run_as_user = uid_field(sc, "runAsUser", &path)?;
            out.run_as_group = uid_field(sc, "runAsGroup", &path)?;
            out.fs_group = uid_field(sc, "fsGroup", &path)?;
            out.run_as_non_root = bool_field(sc, "runAsNonRoot", &path)?;
            out.path = path;
            any = true;
        }
        if let Some(sc) = container.get("securityContext").filter(|v| !v.is_null()) {
            let path = format!("{container_path}.securityContext");
            only_keys(
                sc,
                &path,
                &[
                    "runAsUser",
                    "runAsGroup",
                    "runAsNonRoot",
                    "allowPrivilegeEscalation",
                    "privileged",
                ],
                NOT_HONOURED,
            )?;
            // Workloads always run with no_new_privs and without privileges.
            for key in ["allowPrivilegeEscalation", "privileged"] {
                if bool_field(sc, key, &path)? == Some(true) {
                    return Err(FieldError::unsupported(
                        format!("{path}.{key}"),
                        "workloads run with no_new_privs and without privileges; only false is honoured",
                    ));
                }
            }
            if let Some(v) = uid_field(sc, "runAsUser", &path)? {
                out.run_as_user = Some(v);
            }
            if let Some(v) = uid_field(sc, "runAsGroup", &path)? {
                out.run_as_group = Some(v);
            }
            if let Some(v) = bool_field(sc, "runAsNonRoot", &path)? {
                out.run_as_non_root = Some(v);
            }
            if !any || out.run_as_user.is_some() || out.run_as_group.is_some() {
                out.path = path;
            }
            any = true;
        }
        Ok(any.then_some(out))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A `securityContext` field asks for what the namespace may not use.
    #[error("{field}: {reason}")]
    Refused { field: String, reason: String },
    #[error("namespace {namespace}: the Unix account {account} that [isolation] accounts maps it to does not exist")]
    NoAccount { namespace: String, account: String },
    #[error("namespace {namespace}: the Unix account {account} is root; map it to an ordinary account, or list the namespace in [isolation] privileged_namespaces")]
    RootAccount { namespace: String, account: String },
    #[error("the Unix user {user} exists with uid {uid}, outside [isolation] uid_range {range}: it is not Hearth's; remove it or change user_prefix")]
    Foreign { user: String, uid: u32, range: String },
    #[error("cannot create the Unix user {user}: {message}")]
    Create { user: String, message: String },
    #[error("looking up Unix users: {0}")]
    Lookup(#[from] nix::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("workloads run as their namespaces' users but cannot reach the data dir: {path} is mode {mode:o}, not traversable by others; chmod o+x it, choose a data dir under traversable directories, or set [isolation] enabled = false")]
    Unreachable { path: PathBuf, mode: u32 },
}

impl IdentityError {
    /// As the API answers it: the field at fault, or the namespace.
    pub fn into_field_error(self) -> FieldError {
        match self {
            IdentityError::Refused { field, reason } => FieldError::invalid(field, reason),
            other => FieldError::invalid("metadata.namespace", format!("its workloads cannot run: {other}")),
        }
    }
}

pub struct Identities {
    config: IsolationConfig,
    bounds: (u32, u32),
    homes: PathBuf,
    isolated: bool,
    daemon: RunAs,
    gpu_groups: Vec<u32>,
    /// Namespace to its resolved user; holding the lock also serializes creations.
    cache: Mutex<HashMap<String, RunAs>>,
}

static GLOBAL: OnceLock<Identities> = OnceLock::new();

/// Makes `identities` the daemon's (called once at start-up, before the store opens:
/// the umask it sets decides the modes of every file created after it). In isolated
/// mode the data dir becomes 0711 and what is already in it loses group and other
/// access, except the trees workloads must traverse to reach their own directories.
pub fn install(identities: Identities, data_dir: &Path) -> Result<&'static Identities, IdentityError> {
    if identities.isolated {
        // Each directory above the data dir must let a namespace's user pass.
        let absolute = std::fs::canonicalize(data_dir).map_err(|source| IdentityError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        for ancestor in absolute.ancestors().skip(1) {
            let meta = std::fs::metadata(ancestor).map_err(|source| IdentityError::Io {
                path: ancestor.to_path_buf(),
                source,
            })?;
            if meta.mode() & 0o001 == 0 {
                return Err(IdentityError::Unreachable {
                    path: ancestor.to_path_buf(),
                    mode: meta.mode() & 0o7777,
                });
            }
        }
        nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
        for tree in SHARED_TREES {
            let path = data_dir.join(tree);
            std::fs::create_dir_all(&path).map_err(|source| IdentityError::Io { path, source })?;
        }
        tighten_data_dir(data_dir)?;
    }
    Ok(GLOBAL.get_or_init(|| identities))
}

/// The daemon's identities; shared mode (the current user) when none was installed,
/// as in unit tests.
pub fn global() -> &'static Identities {
    GLOBAL.get_or_init(|| Identities::new(&IsolationConfig::default(), Path::new("/nonexistent"), false))
}

/// Top-level trees of the data dir that hold per-namespace directories: 0711, so a
/// workload can pass through them to its own (0700) directory but list nothing.
pub const SHARED_TREES: &[&str] = &[
    "workloads",
    "home",
    "artifacts",
    "pipelines",
    "pipelines/runs",
    "serving",
    "serving/models",
    "serving/replicas",
    "workspaces",
    "notebooks",
];

fn tighten_data_dir(data_dir: &Path) -> Result<(), IdentityError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Io { path, source }
    };
    set_mode(data_dir, 0o711).map_err(io(data_dir))?;
    // Whatever an older version left readable (the database, tokens, logs) is not.
    let strip = |dir: &Path, keep: &[&str]| -> Result<(), IdentityError> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let name = entry.file_name();
            if meta.file_type().is_symlink() || keep.iter().any(|k| name == *k) || meta.uid() != 0 {
                continue;
            }
            let mode = meta.mode() & 0o7777;
            if mode & 0o077 != 0 {
                set_mode(&path, mode & 0o700).map_err(io(&path))?;
            }
        }
        Ok(())
    };
    strip(data_dir, SHARED_TREES)?;
    for tree in SHARED_TREES {
        let path = data_dir.join(tree);
        if path.is_dir() {
            set_mode(&path, 0o711).map_err(io(&path))?;
            let nested: Vec<&str> = SHARED_TREES
                .iter()
                .filter_map(|t| t.strip_prefix(&format!("{tree}/")))
                .collect();
            strip(&path, &nested)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// `<prefix><namespace>`, cut to the 32 characters `useradd` allows with a digest of
/// the namespace so that long names stay distinct.
fn system_user_name(prefix: &str, namespace: &str) -> String {
    let name = format!("{prefix}{namespace}");
    if name.len() <= 32 {
        return name;
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(namespace.as_bytes()));
    let keep = 32usize.saturating_sub(prefix.len() + 9);
    format!(
        "{prefix}{}-{}",
        &namespace[..keep.min(namespace.len())],
        &digest[..8]
    )
}

fn shell_for(shell: &Path) -> String {
    let s = shell.to_string_lossy();
    if s.is_empty() || s.ends_with("nologin") || s.ends_with("/false") {
        "/bin/sh".to_string()
    } else {
        s.into_owned()
    }
}

fn run_tool(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {} {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Identities {
    /// `data_dir` is where system users' homes go (`<data-dir>/home/<namespace>`).
    /// `root` is whether the daemon runs as root (`geteuid() == 0`).
    pub fn new(config: &IsolationConfig, data_dir: &Path, root: bool) -> Identities {
        let euid = nix::unistd::geteuid();
        let me = User::from_uid(euid).ok().flatten();
        let daemon = RunAs {
            user: me
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_else(|| euid.to_string()),
            uid: euid.as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: nix::unistd::getgroups()
                .unwrap_or_default()
                .into_iter()
                .map(Gid::as_raw)
                .collect(),
            home: me
                .as_ref()
                .map(|u| u.dir.clone())
                .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("/")),
            shell: me
                .as_ref()
                .map(|u| shell_for(&u.shell))
                .unwrap_or_else(|| "/bin/sh".into()),
        };
        let gpu_groups = ["video", "render"]
            .iter()
            .filter_map(|g| Group::from_name(g).ok().flatten())
            .map(|g| g.gid.as_raw())
            .collect();
        Identities {
            bounds: config.uid_bounds().unwrap_or((20000, 20999)),
            config: config.clone(),
            homes: data_dir.join("home"),
            isolated: root && config.enabled,
            daemon,
            gpu_groups,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether namespaces run as users of their own.
    pub fn isolated(&self) -> bool {
        self.isolated
    }

    /// One line for the node view and the systemd status.
    pub fn describe(&self) -> String {
        if self.isolated {
            format!(
                "isolated: each namespace's workloads run as a Unix user of its own ({}<namespace>, uids {}, or the account [isolation] accounts maps it to)",
                self.config.user_prefix, self.config.uid_range
            )
        } else if self.daemon.uid == 0 {
            "not isolated: [isolation] enabled = false, so every namespace's workloads run as root and can read each other's data and the daemon's".to_string()
        } else {
            format!(
                "single-user: the daemon runs as {} (uid {}); every namespace's workloads run as that user and are not isolated from each other",
                self.daemon.user, self.daemon.uid
            )
        }
    }

    /// A few words for the systemd status line.
    pub fn status_word(&self) -> &'static str {
        if self.isolated {
            "namespaces isolated"
        } else {
            "namespaces share one Unix user, not isolated"
        }
    }

    /// The namespace's user (created on first use in isolated mode); the daemon's own
    /// in shared mode.
    pub fn resolve(&self, namespace: &str) -> Result<RunAs, IdentityError> {
        if !self.isolated {
            return Ok(self.daemon.clone());
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = cache.get(namespace) {
            return Ok(hit.clone());
        }
        let mut run_as = match self.config.accounts.get(namespace) {
            Some(account) => self.mapped(namespace, account)?,
            None => self.system_user(namespace)?,
        };
        for g in &self.gpu_groups {
            if !run_as.groups.contains(g) {
                run_as.groups.push(*g);
            }
        }
        cache.insert(namespace.to_string(), run_as.clone());
        Ok(run_as)
    }

    fn mapped(&self, namespace: &str, account: &str) -> Result<RunAs, IdentityError> {
        let user = User::from_name(account)?.ok_or_else(|| IdentityError::NoAccount {
            namespace: namespace.into(),
            account: account.into(),
        })?;
        if user.uid.is_root() && !self.privileged(namespace) {
            return Err(IdentityError::RootAccount {
                namespace: namespace.into(),
                account: account.into(),
            });
        }
        let mut groups: Vec<u32> = CString::new(account)
            .ok()
            .and_then(|name| nix::unistd::getgrouplist(&name, user.gid).ok())
            .unwrap_or_default()
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        if !groups.contains(&user.gid.as_raw()) {
            groups.insert(0, user.gid.as_raw());
        }
        Ok(RunAs {
            user: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            shell: shell_for(&user.shell),
            home: user.dir,
        })
    }

    fn system_user(&self, namespace: &str) -> Result<RunAs, IdentityError> {
        let name = system_user_name(&self.config.user_prefix, namespace);
        let home = self.homes.join(namespace);
        let user = match User::from_name(&name)? {
            Some(user) => user,
            None => self.create(&name, namespace, &home)?,
        };
        let uid = user.uid.as_raw();
        if !(self.bounds.0..=self.bounds.1).contains(&uid) {
            return Err(IdentityError::Foreign {
                user: name,
                uid,
                range: self.config.uid_range.clone(),
            });
        }
        // The home lives in this data dir, which may be newer than the account.
        let io = |source| IdentityError::Io {
            path: home.clone(),
            source,
        };
        std::fs::create_dir_all(&self.homes).map_err(io)?;
        set_mode(&self.homes, 0o711).map_err(io)?;
        std::fs::create_dir_all(&home).map_err(io)?;
        let run_as = RunAs {
            user: user.name,
            uid,
            gid: user.gid.as_raw(),
            groups: vec![user.gid.as_raw()],
            home: home.clone(),
            shell: shell_for(&user.shell),
        };
        self.hand_over(&run_as, &self.homes, &home).map_err(io)?;
        Ok(run_as)
    }

    fn create(&self, name: &str, namespace: &str, home: &Path) -> Result<User, IdentityError> {
        let create_err = |message: String| IdentityError::Create {
            user: name.into(),
            message,
        };
        let (first, last) = self.bounds;
        let mut last_error = format!("no free uid and gid left in {}", self.config.uid_range);
        for id in first..=last {
            if User::from_uid(Uid::from_raw(id))?.is_some() || Group::from_gid(Gid::from_raw(id))?.is_some() {
                continue;
            }
            let id_text = id.to_string();
            if Group::from_name(name)?.is_none() {
                if let Err(e) = run_tool("groupadd", &["--system", "--gid", &id_text, name]) {
                    // Another tool may have taken the id meanwhile: try the next one.
                    last_error = e;
                    continue;
                }
            }
            let comment = format!("Hearth namespace {namespace}");
            let home_text = home.display().to_string();
            match run_tool(
                "useradd",
                &[
                    "--system",
                    "--uid",
                    &id_text,
                    "--gid",
                    name,
                    "--home-dir",
                    &home_text,
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--comment",
                    &comment,
                    name,
                ],
            ) {
                Ok(()) => {
                    tracing::info!(
                        user = name,
                        uid = id,
                        namespace,
                        "created the Unix user of a namespace"
                    );
                    return User::from_name(name)?
                        .ok_or_else(|| create_err("useradd succeeded but the user is not found".into()));
                }
                Err(e) => {
                    // Another daemon (or a test beside this one) may have made it meanwhile.
                    if let Some(user) = User::from_name(name)? {
                        return Ok(user);
                    }
                    last_error = e;
                }
            }
        }
        Err(create_err(last_error))
    }

    fn privileged(&self, namespace: &str) -> bool {
        self.config.privileged_namespaces.iter().any(|n| n == namespace)
    }

    /// The identity a workload of `namespace` runs as, with its `securityContext`
    /// applied: inside what the namespace may use (its user's uid, its groups), or
    /// anything, root included, for `[isolation] privileged_namespaces`.
    pub fn for_workload(
        &self,
        namespace: &str,
        sc: Option<&SecurityContext>,
    ) -> Result<RunAs, IdentityError> {
        let mut run_as = self.resolve(namespace)?;
        let Some(sc) = sc else {
            return Ok(run_as);
        };
        let privileged = self.isolated && self.privileged(namespace);
        let how = if self.isolated {
            format!(
                "namespace {namespace}'s workloads run as {} (uid {}, groups {:?}); an admin may allow other ids with [isolation] privileged_namespaces",
                run_as.user, run_as.uid, run_as.groups
            )
        } else {
            format!(
                "the daemon runs as {} (uid {}) and cannot switch users",
                run_as.user, run_as.uid
            )
        };
        if let Some(uid) = sc.run_as_user {
            if uid != run_as.uid && !privileged {
                return Err(IdentityError::Refused {
                    field: format!("{}.runAsUser", sc.path),
                    reason: format!("{uid} is not allowed: {how}"),
                });
            }
            if uid != run_as.uid {
                run_as.uid = uid;
                run_as.user = User::from_uid(Uid::from_raw(uid))?
                    .map(|u| u.name)
                    .unwrap_or_else(|| uid.to_string());
            }
        }
        let allowed_group = |gid: u32, key: &str| -> Result<(), IdentityError> {
            if gid == run_as.gid || run_as.groups.contains(&gid) || privileged {
                Ok(())
            } else {
                Err(IdentityError::Refused {
                    field: format!("{}.{key}", sc.path),
                    reason: format!("{gid} is not allowed: {how}"),
                })
            }
        };
        if let Some(gid) = sc.run_as_group {
            allowed_group(gid, "runAsGroup")?;
        }
        if let Some(gid) = sc.fs_group {
            allowed_group(gid, "fsGroup")?;
        }
        if let Some(gid) = sc.run_as_group {
            run_as.gid = gid;
        }
        if let Some(gid) = sc.fs_group {
            if !run_as.groups.contains(&gid) {
                run_as.groups.push(gid);
            }
        }
        if sc.run_as_non_root == Some(true) && run_as.uid == 0 {
            return Err(IdentityError::Refused {
                field: format!("{}.runAsNonRoot", sc.path),
                reason: "the workload would run as root (uid 0)".into(),
            });
        }
        Ok(run_as)
    }

    /// Gives `path` and every directory between `base` (excluded) and it to `run_as`,
    /// mode 0700: directories the daemon made for a workload to write. Each component is
    /// opened without following symlinks, so a workload that owns a parent cannot
    /// redirect the change to a file of someone else's. Nothing to do in shared mode.
    pub fn hand_over(&self, run_as: &RunAs, base: &Path, path: &Path) -> std::io::Result<()> {
        if !self.isolated {
            return Ok(());
        }
        let rest = path.strip_prefix(base).map_err(|_| {
            std::io::Error::other(format!("{} is not under {}", path.display(), base.display()))
        })?;
        let mut dir: OwnedFd = nix::fcntl::open(base, OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        for component in rest.components() {
            let Component::Normal(name) = component else {
                return Err(std::io::Error::other(format!(
                    "{} is not a plain path",
                    path.display()
                )));
            };
            let next = openat(
                &dir,
                name,
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            nix::unistd::fchown(
                &next,
                Some(Uid::from_raw(run_as.uid)),
                Some(Gid::from_raw(run_as.gid)),
            )?;
            nix::sys::stat::fchmod(&next, Mode::from_bits_truncate(0o700))?;
            dir = next;
        }
        Ok(())
    }

    /// Gives a whole tree the daemon wrote (a fetched model) to `run_as`. Only for trees
    /// no workload can reach yet: symlinks are changed themselves, never followed.
    pub fn hand_over_tree(&self, run_as: &RunAs, root: &Path) -> std::io::Result<()> {
        if !self.isolated {
            return Ok(());
        }
        let (uid, gid) = (Some(run_as.uid), Some(run_as.gid));
        let meta = std::fs::symlink_metadata(root)?;
        std::os::unix::fs::lchown(root, uid, gid)?;
        if meta.is_dir() {
            set_mode(root, 0o700)?;
            for entry in std::fs::read_dir(root)? {
                self.hand_over_tree(run_as, &entry?.path())?;
            }
        }
        Ok(())
    }
}

/// Runs `f` on a thread of its own whose credentials are `run_as`'s, so that what it
/// opens, reads and creates is checked (and owned) as that user: the daemon never opens
/// a path a user named with root's rights. The raw system calls change the calling
/// thread only (glibc's wrappers would change every thread of the daemon); the thread
/// ends with `f`. In shared mode `f` runs as the daemon.
pub fn as_user<T: Send + 'static>(
    run_as: &RunAs,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    if !global().isolated {
        return Ok(f());
    }
    let run_as = run_as.clone();
    std::thread::Builder::new()
        .name("hearth-as-user".into())
        .spawn(move || -> std::io::Result<T> {
            let groups: Vec<libc::gid_t> = run_as.groups.clone();
            // SAFETY: plain system calls on this thread's own credentials.
            unsafe {
                if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                    || libc::syscall(libc::SYS_setresgid, run_as.gid, run_as.gid, run_as.gid) != 0
                    || libc::syscall(libc::SYS_setresuid, run_as.uid, run_as.uid, run_as.uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(f())
        })?
        .join()
        .map_err(|_| std::io::Error::other("the task run as the workload's user panicked"))?
}

/// What the shim prepares before fork for [`enter`]: nothing in between may allocate.
pub struct Prepared {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    working_dir: Option<CString>,
}

impl Prepared {
    pub fn new(run_as: &RunAs, working_dir: Option<&Path>) -> std::io::Result<Prepared> {
        use std::os::unix::ffi::OsStrExt;
        Ok(Prepared {
            uid: Uid::from_raw(run_as.uid),
            gid: Gid::from_raw(run_as.gid),
            groups: run_as.groups.iter().map(|g| Gid::from_raw(*g)).collect(),
            working_dir: working_dir
                .map(|p| CString::new(p.as_os_str().as_bytes()))
                .transpose()
                .map_err(std::io::Error::other)?,
        })
    }
}

/// In the workload's child between fork and exec, after the root-only setup: drops to
/// the workload's user for good (groups, gid, uid, then `no_new_privs` so no setuid
/// binary gives root back), sets the usual 022 umask, and enters the working directory
/// as that user, so a directory the user may not read fails the start.
/// Only async-signal-safe calls.
pub fn enter(prepared: &Prepared) -> std::io::Result<()> {
    nix::unistd::setgroups(&prepared.groups)?;
    nix::unistd::setresgid(prepared.gid, prepared.gid, prepared.gid)?;
    nix::unistd::setresuid(prepared.uid, prepared.uid, prepared.uid)?;
    nix::sys::prctl::set_no_new_privs()?;
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    if let Some(dir) = &prepared.working_dir {
        // SAFETY: chdir(2) with a NUL-terminated path made before fork.
        if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_namespaces_get_distinct_short_names() {
        assert_eq!(system_user_name("hearth-", "alice"), "hearth-alice");
        let a = system_user_name("hearth-", &"a".repeat(60));
        let b = system_user_name("hearth-", &format!("{}b", "a".repeat(59)));
        assert!(a.len() <= 32 && b.len() <= 32, "{a} {b}");
        assert_ne!(a, b);
    }

    #[test]
    fn container_fields_win_and_unhonoured_ones_are_refused() {
        let pod = json!({"securityContext": {"runAsUser": 1000, "fsGroup": 5}});
        let container = json!({"securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": false}});
        let sc = SecurityContext::parse(&pod, "p", &container, "c")
            .unwrap()
            .unwrap();
        assert_eq!((sc.run_as_user, sc.fs_group), (Some(0), Some(5)));
        assert_eq!(sc.path, "c.securityContext");
        let bad = json!({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}});
        assert!(matches!(
            SecurityContext::parse(&json!({}), "p", &bad, "c"),
            Err(FieldError::Unsupported { path, .. }) if path == "c.securityContext.capabilities"
        ));
        let negative = json!({"securityContext": {"runAsUser": -1}});
        assert!(SecurityContext::parse(&negative, "p", &json!({}), "c").is_err());
        assert_eq!(
            SecurityContext::parse(&json!({}), "p", &json!({}), "c").unwrap(),
            None
        );
    }

    #[test]
    fn shared_mode_allows_only_the_daemons_own_user() {
        let ids = Identities::new(&IsolationConfig::default(), Path::new("/nonexistent"), false);
        let me = nix::unistd::geteuid().as_raw();
        let own = SecurityContext {
            run_as_user: Some(me),
            path: "s".into(),
            ..Default::default()
        };
        assert_eq!(ids.for_workload("a", Some(&own)).unwrap().uid, me);
        let other = SecurityContext {
            run_as_user: Some(me + 1),
            path: "s".into(),
            ..Default::default()
        };
        assert!(matches!(
            ids.for_workload("a", Some(&other)),
            Err(IdentityError::Refused { field, .. }) if field == "s.runAsUser"
        ));
    }
}

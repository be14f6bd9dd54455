//! containerd's NVIDIA runtime for k3s's embedded containerd.
//!
//! k3s adds an `nvidia` runtime to its generated containerd config by itself when it
//! finds `nvidia-container-runtime` in `/usr/local/nvidia/toolkit` (the GPU Operator's
//! toolkit) or `/usr/bin` (the distribution package), in that order
//! (k3s `pkg/agent/containerd/runtimes.go`, `findNvidiaContainerRuntimes`). Then Hearth
//! only starts k3s with `--default-runtime nvidia`. Only when the runtime lives
//! elsewhere does Hearth write a template, and that template always extends k3s's base
//! (`{{ template "base" . }}`) so k3s's CNI, sandbox-image and registry settings stay:
//! a template that replaces the base loses them.

use std::path::{Path, PathBuf};

/// The locations k3s searches for `nvidia-container-runtime`, in its order.
pub const K3S_RUNTIME_DIRS: &[&str] = &["/usr/local/nvidia/toolkit", "/usr/bin"];

pub const RUNTIME_BINARY: &str = "nvidia-container-runtime";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("cannot read a k3s version from {0:?} (expected `k3s version v1.33.1+k3s1 (...)`)")]
    Unrecognized(String),
}

/// A k3s release, from the first line of `k3s --version`
/// (`k3s version v1.33.1+k3s1 (99d91538)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct K3sVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for K3sVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl K3sVersion {
    pub fn parse(output: &str) -> Result<K3sVersion, VersionError> {
        let bad = || VersionError::Unrecognized(output.lines().next().unwrap_or("").to_string());
        let word = output
            .split_whitespace()
            .find(|w| w.starts_with('v') && w.contains("+k3s"))
            .ok_or_else(bad)?;
        let core = word[1..].split('+').next().ok_or_else(bad)?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch)), None) => {
                Ok(K3sVersion { major, minor, patch })
            }
            _ => Err(bad()),
        }
    }

    /// The containerd this k3s bundles. k3s moved to containerd 2.0 (config version 3)
    /// in its February 2025 releases, backported to every branch then maintained:
    /// v1.32.2+k3s1, v1.31.6+k3s1, v1.30.10+k3s1, v1.29.14+k3s1 (k3s-io/k3s#11626,
    /// #11745); every 1.33 and later bundles 2.x.
    pub fn containerd(self) -> ContainerdGeneration {
        let first_v2_patch = match (self.major, self.minor) {
            (1, minor) if minor >= 33 => 0,
            (1, 32) => 2,
            (1, 31) => 6,
            (1, 30) => 10,
            (1, 29) => 14,
            (1, _) => u32::MAX,
            _ => 0,
        };
        if self.patch >= first_v2_patch {
            ContainerdGeneration::V2
        } else {
            ContainerdGeneration::V1
        }
    }
}

/// containerd 1.x reads config version 2; containerd 2.x reads version 3. k3s reads a
/// template of each from its own file name, and the two schemas cannot be mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ContainerdGeneration {
    /// containerd 1.x: `config.toml.tmpl`, `version = 2`.
    V1,
    /// containerd 2.x: `config-v3.toml.tmpl`, `version = 3`.
    V2,
}

impl ContainerdGeneration {
    pub fn template_file_name(self) -> &'static str {
        match self {
            ContainerdGeneration::V1 => "config.toml.tmpl",
            ContainerdGeneration::V2 => "config-v3.toml.tmpl",
        }
    }

    pub fn config_version(self) -> u32 {
        match self {
            ContainerdGeneration::V1 => 2,
            ContainerdGeneration::V2 => 3,
        }
    }

    /// The CRI plugin's runtimes table. containerd 2.x split the CRI plugin and
    /// renamed it `io.containerd.cri.v1.runtime` (containerd `docs/cri/config.md`).
    fn runtimes_table(self) -> &'static str {
        match self {
            ContainerdGeneration::V1 => r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes"#,
            ContainerdGeneration::V2 => r#"plugins."io.containerd.cri.v1.runtime".containerd.runtimes"#,
        }
    }
}

/// Where `nvidia-container-runtime` was found, and so how k3s gets the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeLocation {
    /// In a directory k3s searches: k3s writes the runtime table itself.
    DetectedByK3s(PathBuf),
    /// Found elsewhere (on `PATH`): Hearth writes the template.
    Elsewhere(PathBuf),
    Missing,
}

/// How the NVIDIA runtime becomes containerd's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeWiring {
    /// Start k3s with `--default-runtime nvidia`; write no template.
    Flag,
    /// Write this template (file name, contents) into k3s's containerd dir, and start
    /// k3s with `--default-runtime nvidia` too (the template's table is named `nvidia`).
    Template {
        file_name: &'static str,
        contents: String,
    },
    /// No NVIDIA runtime: GPU pods cannot run; nothing is written.
    None,
}

/// Looks for the runtime where k3s does (under `root`, `/` outside tests), then on
/// `path` (a `PATH`-style list).
pub fn locate_runtime(root: &Path, path: Option<&std::ffi::OsStr>) -> RuntimeLocation {
    for dir in K3S_RUNTIME_DIRS {
        let candidate = root.join(dir.trim_start_matches('/')).join(RUNTIME_BINARY);
        if is_executable_file(&candidate) {
            return RuntimeLocation::DetectedByK3s(Path::new(dir).join(RUNTIME_BINARY));
        }
    }
    if let Some(path) = path {
        for dir in std::env::split_paths(path) {
            let candidate = dir.join(RUNTIME_BINARY);
            if is_executable_file(&candidate) {
                return RuntimeLocation::Elsewhere(candidate);
            }
        }
    }
    RuntimeLocation::Missing
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The flag-versus-template rule.
pub fn wiring(location: &RuntimeLocation, generation: ContainerdGeneration) -> RuntimeWiring {
    match location {
        RuntimeLocation::DetectedByK3s(_) => RuntimeWiring::Flag,
        RuntimeLocation::Elsewhere(binary) => RuntimeWiring::Template {
            file_name: generation.template_file_name(),
            contents: template(generation, binary),
        },
        RuntimeLocation::Missing => RuntimeWiring::None,
    }
}

/// The runtime table alone (what the template adds after the base), in the schema of
/// `generation`: runc v2 shim with the NVIDIA runtime as its binary and systemd cgroups,
/// as the NVIDIA Container Toolkit's `nvidia-ctk runtime configure` writes it.
pub fn runtime_table(generation: ContainerdGeneration, binary: &Path) -> String {
    let table = generation.runtimes_table();
    let binary = toml::Value::String(binary.display().to_string());
    format!(
        "[{table}.nvidia]\n  runtime_type = \"io.containerd.runc.v2\"\n\n[{table}.nvidia.options]\n  BinaryName = {binary}\n  SystemdCgroup = true\n"
    )
}

/// A k3s containerd template: k3s's base, then the `nvidia` runtime table.
pub fn template(generation: ContainerdGeneration, binary: &Path) -> String {
    format!(
        "# Written by Hearth: k3s's own config (CNI, sandbox image, registries) plus the\n# NVIDIA runtime, which lives where k3s does not look for it.\n{{{{ template \"base\" . }}}}\n\n{}",
        runtime_table(generation, binary)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_pick_the_containerd_generation() {
        let v = K3sVersion::parse("k3s version v1.33.1+k3s1 (99d91538)\ngo version go1.24.2\n").unwrap();
        assert_eq!(
            v,
            K3sVersion {
                major: 1,
                minor: 33,
                patch: 1
            }
        );
        assert_eq!(v.containerd(), ContainerdGeneration::V2);
        let gen = |s: &str| K3sVersion::parse(s).unwrap().containerd();
        assert_eq!(gen("k3s version v1.32.1+k3s1 (x)"), ContainerdGeneration::V1);
        assert_eq!(gen("k3s version v1.32.2+k3s1 (x)"), ContainerdGeneration::V2);
        assert_eq!(gen("k3s version v1.31.5+k3s1 (x)"), ContainerdGeneration::V1);
        assert_eq!(gen("k3s version v1.31.6+k3s1 (x)"), ContainerdGeneration::V2);
        assert_eq!(gen("k3s version v1.28.15+k3s1 (x)"), ContainerdGeneration::V1);
        assert_eq!(gen("k3s version v1.35.0+k3s1 (x)"), ContainerdGeneration::V2);
        assert!(K3sVersion::parse("Usage: k3s").is_err());
        assert!(K3sVersion::parse("k3s version v1.x.1+k3s1").is_err());
    }

    #[test]
    fn template_extends_the_base_and_names_the_file_per_generation() {
        let bin = Path::new("/opt/nvidia/bin/nvidia-container-runtime");
        for generation in [ContainerdGeneration::V1, ContainerdGeneration::V2] {
            let text = template(generation, bin);
            assert!(text.contains("{{ template \"base\" . }}\n"), "{text}");
            assert!(!text.contains("version ="), "the base sets the version: {text}");
            assert!(text.contains(".runtimes.nvidia.options]"));
        }
        assert_eq!(ContainerdGeneration::V1.template_file_name(), "config.toml.tmpl");
        assert_eq!(
            ContainerdGeneration::V2.template_file_name(),
            "config-v3.toml.tmpl"
        );
    }

    fn executable(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn flag_when_k3s_finds_the_runtime_template_when_elsewhere() {
        let root = tempfile::tempdir().unwrap();
        let v3 = ContainerdGeneration::V2;
        let other = root.path().join("opt/nvidia/bin");
        let path = std::env::join_paths([&other]).unwrap();

        assert_eq!(locate_runtime(root.path(), Some(&path)), RuntimeLocation::Missing);
        assert_eq!(wiring(&RuntimeLocation::Missing, v3), RuntimeWiring::None);

        executable(&other.join(RUNTIME_BINARY));
        let found = locate_runtime(root.path(), Some(&path));
        assert_eq!(found, RuntimeLocation::Elsewhere(other.join(RUNTIME_BINARY)));
        match wiring(&found, v3) {
            RuntimeWiring::Template { file_name, contents } => {
                assert_eq!(file_name, "config-v3.toml.tmpl");
                assert!(contents.contains(&other.join(RUNTIME_BINARY).display().to_string()));
            }
            other => panic!("{other:?}"),
        }

        // The package's location wins over PATH, and the GPU Operator's over the package's.
        executable(&root.path().join("usr/bin").join(RUNTIME_BINARY));
        let found = locate_runtime(root.path(), Some(&path));
        assert_eq!(
            found,
            RuntimeLocation::DetectedByK3s(PathBuf::from("/usr/bin/nvidia-container-runtime"))
        );
        assert_eq!(wiring(&found, v3), RuntimeWiring::Flag);
        executable(&root.path().join("usr/local/nvidia/toolkit").join(RUNTIME_BINARY));
        assert_eq!(
            locate_runtime(root.path(), Some(&path)),
            RuntimeLocation::DetectedByK3s(PathBuf::from(
                "/usr/local/nvidia/toolkit/nvidia-container-runtime"
            ))
        );

        // A directory of that name is not the runtime (k3s skips it too).
        let dir_root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir_root.path().join("usr/bin").join(RUNTIME_BINARY)).unwrap();
        assert_eq!(locate_runtime(dir_root.path(), None), RuntimeLocation::Missing);
    }
}

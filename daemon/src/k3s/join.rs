//! `hearth k3s join-command`: what to run on a second machine to add it to this k3s as
//! an agent. The token is k3s's own node token (`<k3s data dir>/server/node-token`,
//! readable by root only); the URL is this host's address on its default route at k3s's
//! API port (HTTPS: the token never crosses the network in clear text).

use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};

use super::manifests::GPU_PRESENT_LABEL;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot read k3s's node token at {path}: {source} (start `hearth serve --runtime k3s` first; the file is root's)")]
    Token { path: PathBuf, source: std::io::Error },
    #[error("cannot tell this host's address (no default route?): {0}; give --server-address")]
    Address(std::io::Error),
}

pub fn token_path(hearth_data_dir: &Path) -> PathBuf {
    super::data_dir(hearth_data_dir).join("server/node-token")
}

/// The local address the kernel would send from on the default route. Connecting a
/// UDP socket sends nothing; 192.0.2.1 is a documentation address (RFC 5737).
pub fn default_route_address() -> Result<IpAddr, JoinError> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(JoinError::Address)?;
    socket.connect("192.0.2.1:9").map_err(JoinError::Address)?;
    Ok(socket.local_addr().map_err(JoinError::Address)?.ip())
}

/// The commands, one for a GPU machine and one for a CPU-only one. `k3s_release` (the
/// server's, e.g. `v1.33.1+k3s1`) pins the agent's version: an agent newer than its
/// server is unsupported.
pub fn commands(server_url: &str, token: &str, k3s_release: Option<&str>) -> String {
    let version = k3s_release
        .map(|v| format!(" INSTALL_K3S_VERSION={v}"))
        .unwrap_or_default();
    let base = format!("curl -sfL https://get.k3s.io | K3S_URL={server_url} K3S_TOKEN={token}{version}");
    format!(
        "# On a machine with NVIDIA GPUs (driver and nvidia-container-toolkit installed):\n\
         {base} INSTALL_K3S_EXEC=\"agent --node-label {}={} --default-runtime nvidia\" sh -\n\
         # On a machine without GPUs:\n\
         {base} sh -\n\
         # Air-gapped: first copy the k3s binary to /usr/local/bin/k3s and the images tarball to\n\
         # /var/lib/rancher/k3s/agent/images/, then add INSTALL_K3S_SKIP_DOWNLOAD=true to the command.\n",
        GPU_PRESENT_LABEL.0, GPU_PRESENT_LABEL.1
    )
}

/// The release word of `k3s --version` (`v1.33.1+k3s1`).
pub fn release_word(version_output: &str) -> Option<String> {
    version_output
        .split_whitespace()
        .find(|w| w.starts_with('v') && w.contains("+k3s"))
        .map(str::to_string)
}

pub fn read_token(hearth_data_dir: &Path) -> Result<String, JoinError> {
    let path = token_path(hearth_data_dir);
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .map_err(|source| JoinError::Token { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_carry_url_token_version_and_the_gpu_label() {
        let text = commands(
            "https://10.0.0.5:6443",
            "K10abc::server:xyz",
            Some("v1.33.1+k3s1"),
        );
        assert!(text.contains(
            "K3S_URL=https://10.0.0.5:6443 K3S_TOKEN=K10abc::server:xyz INSTALL_K3S_VERSION=v1.33.1+k3s1"
        ));
        assert!(text.contains("--node-label nvidia.com/gpu.present=true --default-runtime nvidia"));
        assert_eq!(text.matches("curl -sfL").count(), 2);
        assert_eq!(
            release_word("k3s version v1.33.1+k3s1 (99d91538)").as_deref(),
            Some("v1.33.1+k3s1")
        );
    }
}

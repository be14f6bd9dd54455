#!/usr/bin/env bash
# Installs Hearth on this machine:
#   - the binary: HEARTH_BINARY=/path/to/hearth, else `cargo build --release` when run
#     from a checkout (there is no download: release artifacts are not published yet);
#   - /usr/local/bin/hearth, the systemd unit, /etc/hearth/config.toml if missing;
#   - `systemctl daemon-reload && systemctl enable --now hearth` when systemd runs.
# Run it as root (or it re-runs itself with sudo). Idempotent: running it again
# upgrades the binary and unit and keeps the config and data.
#
# Environment: HEARTH_BINARY (a built binary), PREFIX (default /usr/local),
# DESTDIR (stage into a directory instead of /, for packaging and tests; implies no
# systemctl), HEARTH_NO_START=1 (install but do not enable/start).
set -euo pipefail

PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checkout="$(dirname "$here")"

say() { printf 'hearth-install: %s\n' "$*"; }
die() { printf 'hearth-install: error: %s\n' "$*" >&2; exit 1; }

if [[ -z "$DESTDIR" && "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || die "run as root (sudo is not available)"
    say "re-running with sudo"
    exec sudo --preserve-env=HEARTH_BINARY,PREFIX,HEARTH_NO_START "$0" "$@"
fi

binary="${HEARTH_BINARY:-}"
if [[ -z "$binary" ]]; then
    [[ -f "$checkout/Cargo.toml" && -d "$checkout/daemon" ]] \
        || die "not in a Hearth checkout: set HEARTH_BINARY=/path/to/hearth"
    command -v cargo >/dev/null || die "cargo not found: install Rust, or set HEARTH_BINARY"
    say "building the release binary (cargo build --release)"
    # Build as the checkout's owner, not root, so target/ stays theirs.
    owner="$(stat -c %U "$checkout")"
    if [[ "$(id -u)" -eq 0 && "$owner" != root ]] && command -v sudo >/dev/null; then
        sudo -u "$owner" -H bash -lc "cd '$checkout' && cargo build --release --locked"
    else
        (cd "$checkout" && cargo build --release --locked)
    fi
    binary="$checkout/target/release/hearth"
fi
[[ -x "$binary" ]] || die "$binary is not an executable"
"$binary" --version >/dev/null || die "$binary does not run on this machine"

unit_src="$checkout/systemd/hearth.service"
[[ -f "$unit_src" ]] || die "missing $unit_src"

bin_dir="$DESTDIR$PREFIX/bin"
unit_dir="$DESTDIR/etc/systemd/system"
conf_dir="$DESTDIR/etc/hearth"

install -d -m 0755 "$bin_dir" "$unit_dir"
install -d -m 0755 "$conf_dir"
# Replace atomically, so a running daemon keeps its old inode until it restarts.
install -m 0755 "$binary" "$bin_dir/hearth.new"
mv -f "$bin_dir/hearth.new" "$bin_dir/hearth"
sed "s#^ExecStart=/usr/local/bin/hearth#ExecStart=$PREFIX/bin/hearth#" "$unit_src" > "$unit_dir/hearth.service"
chmod 0644 "$unit_dir/hearth.service"
say "installed $bin_dir/hearth ($("$bin_dir/hearth" --version))"
say "installed $unit_dir/hearth.service"

if [[ ! -e "$conf_dir/config.toml" ]]; then
    cat > "$conf_dir/config.toml" <<'CONF'
# Hearth configuration. Every key is optional; `hearth config show` prints the
# effective values. Each key can also be set as HEARTH_<KEY> in the environment.
# listen = "127.0.0.1:8470"
# serving_listen = "127.0.0.1:8471"
# HTTPS for kubectl and remote clients (CA and kubeconfig under data_dir);
# "0.0.0.0:8472" to serve the network, tls_sans for the names it is reached by.
# tls_listen = "127.0.0.1:8472"
# tls_sans = ["gpu-box.lan"]
# data_dir = "/var/lib/hearth"
# runtime = "process"
# log_level = "info"
# max_body_bytes = 67108864
#
# [metrics]
# public = false
#
# [gpu]
# time_slicing_replicas = 1
CONF
    chmod 0644 "$conf_dir/config.toml"
    say "wrote $conf_dir/config.toml"
else
    say "kept $conf_dir/config.toml"
fi
"$bin_dir/hearth" config show --config "$conf_dir/config.toml" >/dev/null \
    || die "$conf_dir/config.toml is not valid (see above)"

token="/var/lib/hearth/admin.token"
if [[ -n "$DESTDIR" || "${HEARTH_NO_START:-0}" == 1 ]]; then
    say "not starting the service; start it with: systemctl daemon-reload && systemctl enable --now hearth"
elif [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl daemon-reload
    systemctl enable hearth >/dev/null
    # restart, not start: an upgrade must run the new binary. KillMode=process keeps
    # running workloads alive across it.
    systemctl restart hearth
    say "hearth is running: systemctl status hearth"
else
    say "systemd is not running here; start the daemon with: $PREFIX/bin/hearth serve"
fi
say "the admin token is in $token (readable by root only), once the daemon has started"
say "try: curl -H \"Authorization: Bearer \$(sudo cat $token)\" http://127.0.0.1:8470/hearth/v1/version"

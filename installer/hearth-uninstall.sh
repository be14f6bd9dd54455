#!/bin/sh
# Removes what installer/install.sh installed (installed as /usr/local/bin/hearth-uninstall.sh).
#   hearth-uninstall.sh            stops and disables the service, ends its workloads,
#                                  removes the binary, unit, docs and this script; keeps
#                                  the data dir and /etc/hearth (a reinstall finds them)
#   hearth-uninstall.sh --purge    also removes the data dir (database, admin token,
#                                  kubeconfig, artifacts, logs, k3s images) and /etc/hearth
#   --dry-run                      prints the plan and changes nothing
# HEARTH_ROOT=DIR: uninstall from a tree install.sh installed into with HEARTH_ROOT.
# POSIX sh.
set -eu

prog=hearth-uninstall
say() { printf '%s: %s\n' "$prog" "$*"; }
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

purge=0
dry_run=0
for arg in "$@"; do
    case $arg in
        --purge) purge=1 ;;
        --dry-run) dry_run=1 ;;
        -h | --help) sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$arg' (known: --purge, --dry-run, --help)" ;;
    esac
done

# done_or_would PAST FUTURE WHAT: says what was done, or under --dry-run what would be.
done_or_would() {
    if [ "$dry_run" = 1 ]; then
        say "would $2 $3"
    else
        say "$1 $3"
    fi
}

run() {
    if [ "$dry_run" = 1 ]; then
        printf '  would run: %s\n' "$*"
    else
        "$@"
    fi
}

root=${HEARTH_ROOT:-}
[ "$root" = / ] && root=
root=${root%/}
if [ -n "$root" ]; then
    case $root in
        /*) ;;
        *) root=$(pwd)/$root ;;
    esac
    [ -d "$root" ] || die "HEARTH_ROOT=$root does not exist"
elif [ "$(id -u)" != 0 ]; then
    die "must run as root: sudo $0 $*"
fi

bin_path=/usr/local/bin/hearth
conf_dir=/etc/hearth
manifest=/usr/local/share/hearth/manifest
unit=hearth.service

# The data dir the config names, asked of the installed binary before it is removed.
data_dir=
if [ -x "$root$bin_path" ]; then
    conf=/dev/null
    [ ! -f "$root$conf_dir/config.toml" ] || conf=$root$conf_dir/config.toml
    # A clean environment: the caller's HEARTH_* variables are not the service's.
    data_dir=$(env -i PATH="$PATH" "$root$bin_path" config show --config "$conf" 2>/dev/null \
        | sed -n 's/^data_dir = "\(.*\)"$/\1/p' | head -n1) || true
fi
[ -n "$data_dir" ] || data_dir=/var/lib/hearth

# --- the service ---------------------------------------------------------------------
if [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    if systemctl --quiet is-active "$unit"; then
        # KillMode=process leaves workloads running when the daemon stops (so that an
        # upgrade keeps them); an uninstall ends them: every process of the unit's
        # cgroup gets SIGTERM, then the unit is stopped.
        # (--kill-who: the name before systemd 252, a prefix getopt accepts of --kill-whom since.)
        run systemctl kill --kill-who=all --signal=SIGTERM "$unit" || true
    fi
    run systemctl disable --now "$unit" || true
    systemd=1
else
    if [ -n "$root" ] && command -v systemctl >/dev/null 2>&1 \
        && [ -f "$root/etc/systemd/system/$unit" ]; then
        run systemctl --root="$root" --quiet disable "$unit" || true
    fi
    systemd=0
    if [ -z "$root" ] && command -v pgrep >/dev/null 2>&1 && pgrep -x hearth >/dev/null 2>&1; then
        say "a hearth process still runs (pid $(pgrep -x hearth | tr '\n' ' ')): stop it yourself (kill -TERM)"
    fi
fi

# --- files ---------------------------------------------------------------------------
files=
if [ -f "$root$manifest" ]; then
    files=$(cat "$root$manifest")
else
    files="$bin_path
/usr/local/bin/hearth-uninstall.sh
/etc/systemd/system/$unit
/usr/local/share/doc/hearth/README.md
/usr/local/share/doc/hearth/LICENSE
/usr/local/share/doc/hearth/THIRD-PARTY-LICENSES.md"
fi
for f in $files; do
    case $f in
        /*) ;;
        *) continue ;; # the manifest only ever holds absolute paths
    esac
    if [ -e "$root$f" ] || [ -L "$root$f" ]; then
        run rm -f "$root$f"
        done_or_would removed remove "$root$f"
    fi
done
run rm -f "$root$manifest" "$root/etc/systemd/system/multi-user.target.wants/$unit"
for d in /usr/local/share/doc/hearth /usr/local/share/hearth; do
    [ ! -d "$root$d" ] || run rmdir "$root$d" 2>/dev/null || true
done
[ "$systemd" = 0 ] || run systemctl daemon-reload

# --- data ----------------------------------------------------------------------------
if [ "$purge" = 1 ]; then
    case $data_dir in
        / | /etc | /usr | /var | /var/lib | /home | /root | '') die "refusing to purge data_dir=$data_dir" ;;
        /*) ;;
        *) die "refusing to purge a relative data_dir ($data_dir)" ;;
    esac
    for d in "$root$data_dir" "$root$conf_dir"; do
        if [ -e "$d" ]; then
            run rm -rf "$d"
            done_or_would purged purge "$d"
        fi
    done
    if [ "$dry_run" = 1 ]; then
        say "Unix users Hearth made for namespaces (isolation, 'hearth-<namespace>') would be kept:"
    else
        say "Unix users Hearth made for namespaces (isolation, 'hearth-<namespace>') are kept:"
    fi
    say "  list them with: getent passwd | grep '^hearth-'; remove each with userdel"
else
    done_or_would kept keep "the data in $root$data_dir and the config in $root$conf_dir (--purge removes them)"
fi
if [ "$dry_run" = 1 ]; then
    say "--dry-run: hearth would be uninstalled; nothing was changed"
else
    say "hearth is uninstalled"
fi

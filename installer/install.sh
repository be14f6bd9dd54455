#!/bin/sh
# Hearth installer. POSIX sh (dash, busybox ash), so that it can be piped:
#   curl -sfL <release-url>/install.sh | sudo sh -
# (the copy scripts/release publishes knows <release-url>; any copy takes
# HEARTH_RELEASE_URL=<release-url>/hearth-<version>-<target>.tar.gz).
#
# Where the binary comes from, first match wins; every source is sha256-verified:
#   HEARTH_BINARY=/path/to/hearth   a built binary (checked against HEARTH_SHA256 when set);
#   HEARTH_RELEASE_URL=URL          a release tarball (http(s):// or file://), checked
#                                   against URL.sha256 (or HEARTH_SHA256);
#   a release tarball beside this script (hearth-<version>-<target>.tar.gz with its
#                                   .sha256 file beside it);
#   the unpacked release this script is part of (./hearth, checked against ./SHA256SUMS);
#   the release this copy was published with (RELEASE_URL=... scripts/release):
#                                   <url>/hearth-<version>-<arch>-unknown-linux-gnu.tar.gz.
# A tarball whose checksum does not match is refused; nothing is installed.
#
# What it installs (every path under HEARTH_ROOT when that is set):
#   /usr/local/bin/hearth, /usr/local/bin/hearth-uninstall.sh,
#   /etc/systemd/system/hearth.service, /usr/local/share/doc/hearth/ (README, licenses),
#   /etc/hearth/config.toml (only if absent: a re-run keeps it, and the data dir),
#   /usr/local/share/hearth/manifest (the files above, for hearth-uninstall.sh);
#   with HEARTH_K3S_BINARY or HEARTH_AIRGAP_BUNDLE: /usr/local/bin/k3s and k3s's images
#   under <data-dir>/k3s/agent/images/ (k3s's data lives under Hearth's data dir).
# Then, when systemd runs this machine: daemon-reload, enable --now (restart on an
# upgrade), and wait for /readyz. Without systemd it prints how to start the daemon.
#
# Options (environment):
#   HEARTH_RUNTIME=NAME               runtime written into a new config.toml; one the
#                                     binary provides (`hearth config runtimes` lists them)
#   HEARTH_K3S_BINARY=/path/to/k3s    install this k3s binary (k3s mode)
#   HEARTH_AIRGAP_BUNDLE=DIR|TARBALL  the air-gap bundle scripts/release makes: its
#                                     bin/k3s and images/* are installed
#   HEARTH_SKIP_START=1               install and enable, but do not start
#   HEARTH_ROOT=DIR                   install into DIR as a root file system (an image,
#                                     a chroot): files under DIR at their usual paths, the
#                                     unit and config name the paths as seen from inside DIR.
#                                     The host's systemd is never asked to start anything;
#                                     the unit is enabled with `systemctl --root=DIR` (which
#                                     only writes links under DIR), and the command to run
#                                     the daemon in place is printed. Root is not required.
#   HEARTH_READY_TIMEOUT=SECONDS      how long to wait for /readyz (default 120)
# Arguments: --dry-run prints the plan and changes nothing; --help.
set -eu

# Set by scripts/release (RELEASE_URL) in the copy it publishes, so that
# `curl -sfL <release-url>/install.sh | sudo sh -` fetches the matching tarball.
release_base=
release_version=

prog=hearth-install
say() { printf '%s: %s\n' "$prog" "$*"; }
warn() { printf '%s: warning: %s\n' "$prog" "$*" >&2; }
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -eu/p' "$0" 2>/dev/null | sed -e '$d' -e 's/^# \{0,1\}//' || true
}

dry_run=0
for arg in "$@"; do
    case $arg in
        --dry-run) dry_run=1 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$arg' (known: --dry-run, --help)" ;;
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

# run CMD...: runs it, or prints it under --dry-run.
run() {
    if [ "$dry_run" = 1 ]; then
        printf '  would run: %s\n' "$*"
    else
        "$@"
    fi
}

# --- where we are ------------------------------------------------------------------
root=${HEARTH_ROOT:-}
[ "$root" = / ] && root=
root=${root%/}
if [ -n "$root" ]; then
    case $root in
        /*) ;;
        *) root=$(pwd)/$root ;;
    esac
fi

[ "$(uname -s)" = Linux ] || die "Hearth runs on Linux only (this is $(uname -s))"
case $(uname -m) in
    x86_64 | amd64) arch=x86_64 ;;
    aarch64 | arm64) arch=aarch64 ;;
    *) die "no Hearth build for this CPU architecture ($(uname -m)); x86_64 and aarch64 are built" ;;
esac

if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    die "must run as root (it installs into /usr/local, /etc and a systemd unit): curl -sfL ... | sudo sh -, or sudo sh $0"
fi

systemd=0
if [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemd=1
fi

# The directory this script was run from, when it was run from a file (not piped).
here=
if [ -f "$0" ]; then
    case ${0##*/} in
        *install*) here=$(cd "$(dirname "$0")" && pwd) ;;
    esac
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hearth-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        die "neither sha256sum nor shasum is installed: cannot verify $1"
    fi
}

# verify FILE EXPECTED_HEX WHAT
verify() {
    got=$(sha256_of "$1")
    want=$(printf '%s' "$2" | tr 'A-F' 'a-f')
    if [ "$got" != "$want" ]; then
        die "checksum mismatch for $3: expected sha256 $want, got $got. The file is corrupt or not the one published; nothing was installed"
    fi
    say "verified $3 (sha256 $got)"
}

fetch() { # fetch URL FILE
    case $1 in
        file://*) cp "${1#file://}" "$2" ;;
        *)
            if command -v curl >/dev/null 2>&1; then
                curl -fsSL --retry 3 -o "$2" "$1"
            elif command -v wget >/dev/null 2>&1; then
                wget -q -O "$2" "$1"
            else
                die "neither curl nor wget is installed: cannot download $1"
            fi
            ;;
    esac
}

# unpack TARBALL EXPECTED_SHA WHAT: verifies, unpacks into $tmp, sets src to its top dir.
unpack() {
    verify "$1" "$2" "$3"
    mkdir "$tmp/unpacked"
    tar -xzf "$1" -C "$tmp/unpacked" || die "$3 is not a readable .tar.gz"
    set -- "$tmp"/unpacked/hearth-*/
    [ -d "$1" ] || die "the release tarball has no hearth-<version>-<target>/ directory"
    src=${1%/}
    check_sums "$src"
}

# check_sums DIR: the release's own SHA256SUMS, so that an unpacked copy is checked too.
check_sums() {
    [ -f "$1/SHA256SUMS" ] || die "$1 has no SHA256SUMS: not a Hearth release"
    while read -r sum file; do
        [ -n "$file" ] || continue
        [ -f "$1/$file" ] || die "$1/$file is listed in SHA256SUMS but missing"
        [ "$(sha256_of "$1/$file")" = "$sum" ] \
            || die "checksum mismatch for $1/$file (SHA256SUMS): the release is corrupt; nothing was installed"
    done <"$1/SHA256SUMS"
    say "verified the files of $1 against its SHA256SUMS"
}

# sha256 from a .sha256 file (sha256sum's format: HEX  NAME).
sum_file() {
    [ -f "$1" ] || return 1
    read -r s _ <"$1" || true
    [ -n "${s:-}" ] || die "$1 is empty"
    printf '%s\n' "$s"
}

# --- the binary and the files that come with it --------------------------------------
src=      # a release directory (unpacked) or a checkout, for the unit and the docs
binary=
if [ -z "${HEARTH_BINARY:-}" ] && [ -z "${HEARTH_RELEASE_URL:-}" ] && [ -n "$release_base" ] \
    && { [ -z "$here" ] || ! [ -f "$here/SHA256SUMS" ]; }; then
    HEARTH_RELEASE_URL=$release_base/hearth-$release_version-$arch-unknown-linux-gnu.tar.gz
fi
if [ -n "${HEARTH_BINARY:-}" ]; then
    binary=$HEARTH_BINARY
    [ -f "$binary" ] || die "HEARTH_BINARY=$binary does not exist"
    if [ -n "${HEARTH_SHA256:-}" ]; then
        verify "$binary" "$HEARTH_SHA256" "$binary"
    else
        say "using $binary (set HEARTH_SHA256 to have its checksum checked)"
    fi
    if [ -n "$here" ] && [ -f "$here/hearth.service" ]; then
        src=$here
    elif [ -n "$here" ] && [ -f "$here/../systemd/hearth.service" ]; then
        src=$(cd "$here/.." && pwd)
    fi
elif [ -n "${HEARTH_RELEASE_URL:-}" ]; then
    url=$HEARTH_RELEASE_URL
    name=${url##*/}
    say "downloading $url"
    fetch "$url" "$tmp/$name" || die "could not download $url"
    if [ -n "${HEARTH_SHA256:-}" ]; then
        want=$HEARTH_SHA256
    else
        fetch "$url.sha256" "$tmp/$name.sha256" \
            || die "could not download $url.sha256: refusing to install an unverified tarball (or set HEARTH_SHA256)"
        want=$(sum_file "$tmp/$name.sha256")
    fi
    unpack "$tmp/$name" "$want" "$name"
elif [ -n "$here" ] && [ -f "$here/hearth" ] && [ -f "$here/SHA256SUMS" ]; then
    check_sums "$here"
    src=$here
elif [ -n "$here" ]; then
    found=
    for t in "$here"/hearth-*-"$arch"-*linux*.tar.gz; do
        [ -f "$t" ] || continue
        case ${t##*/} in hearth-airgap-*) continue ;; esac
        [ -z "$found" ] || die "several release tarballs beside $0: choose one with HEARTH_RELEASE_URL=file://$t"
        found=$t
    done
    if [ -z "$found" ]; then
        for t in "$here"/hearth-*.tar.gz; do
            case ${t##*/} in hearth-airgap-*) continue ;; esac
            if [ -f "$t" ]; then die "$t is not built for $arch"; fi
        done
        if [ -f "$here/../Cargo.toml" ]; then
            die "no binary: build one (cargo build --release --locked) and run HEARTH_BINARY=target/release/hearth sh $0"
        fi
        die "no hearth binary: put hearth-<version>-<target>.tar.gz beside $0, or set HEARTH_RELEASE_URL or HEARTH_BINARY"
    fi
    want=$(sum_file "$found.sha256") \
        || die "$found.sha256 is missing: refusing to install an unverified tarball (or set HEARTH_SHA256)"
    [ -z "${HEARTH_SHA256:-}" ] || want=$HEARTH_SHA256
    unpack "$found" "$want" "${found##*/}"
else
    die "no hearth binary: set HEARTH_RELEASE_URL (a release tarball) or HEARTH_BINARY (a built binary)"
fi
[ -n "$binary" ] || binary=$src/hearth
[ -f "$binary" ] || die "$binary is missing"
chmod +x "$binary" 2>/dev/null || true
version=$("$binary" --version 2>/dev/null) \
    || die "$binary does not run on this machine ($arch, libc $(ldd --version 2>/dev/null | head -n1 | sed 's/.* //'))"

# The unit, uninstaller and docs: in a release directory, or at their checkout paths.
find_file() { # find_file NAME CHECKOUT_PATH
    if [ -n "$src" ] && [ -f "$src/$1" ]; then
        printf '%s\n' "$src/$1"
    elif [ -n "$src" ] && [ -f "$src/$2" ]; then
        printf '%s\n' "$src/$2"
    fi
}
unit_src=$(find_file hearth.service systemd/hearth.service)
uninstall_src=$(find_file hearth-uninstall.sh installer/hearth-uninstall.sh)
[ -n "$unit_src" ] || die "hearth.service was not found beside the installer: run the installer from the release tarball or a checkout"
[ -n "$uninstall_src" ] || die "hearth-uninstall.sh was not found beside the installer"

# --- what goes where (paths as seen on the installed system; $root in front on disk) --
bin_path=/usr/local/bin/hearth
uninstall_path=/usr/local/bin/hearth-uninstall.sh
unit_path=/etc/systemd/system/hearth.service
conf_dir=/etc/hearth
conf_path=$conf_dir/config.toml
doc_dir=/usr/local/share/doc/hearth
manifest=/usr/local/share/hearth/manifest
k3s_path=/usr/local/bin/k3s

# The runtimes this binary provides, asked of it (they grow as runtimes are built):
# a config naming another would stop the daemon at start.
runtimes=$(env -i PATH="$PATH" "$binary" config runtimes 2>/dev/null) \
    || die "$binary does not answer \`hearth config runtimes\`: use the installer that came with it"
runtimes=$(printf '%s\n' "$runtimes" | tr '\n' ' ' | sed 's/ *$//; s/ /, /g')
provides() { # provides RUNTIME: whether the binary lists it
    case ", $runtimes, " in
        *", $1, "*) return 0 ;;
        *) return 1 ;;
    esac
}
runtime=${HEARTH_RUNTIME:-}
if [ -n "$runtime" ] && ! provides "$runtime"; then
    die "HEARTH_RUNTIME=$runtime: $version does not provide the $runtime runtime (it provides: $runtimes); nothing was installed"
fi

k3s_binary=${HEARTH_K3S_BINARY:-}
images=
if [ -n "${HEARTH_AIRGAP_BUNDLE:-}" ]; then
    bundle=$HEARTH_AIRGAP_BUNDLE
    if [ -f "$bundle" ]; then
        if [ -f "$bundle.sha256" ]; then
            verify "$bundle" "$(sum_file "$bundle.sha256")" "$bundle"
        else
            die "$bundle.sha256 is missing: refusing to install an unverified air-gap bundle"
        fi
        mkdir "$tmp/airgap"
        tar -xzf "$bundle" -C "$tmp/airgap" || die "$bundle is not a readable .tar.gz"
        set -- "$tmp"/airgap/*/
        bundle=${1%/}
    fi
    [ -d "$bundle" ] || die "HEARTH_AIRGAP_BUNDLE=$HEARTH_AIRGAP_BUNDLE is neither a directory nor a tarball"
    [ ! -f "$bundle/SHA256SUMS" ] || check_sums "$bundle"
    if [ -z "$k3s_binary" ] && [ -f "$bundle/bin/k3s" ]; then
        k3s_binary=$bundle/bin/k3s
    fi
    images=$bundle/images
    [ -d "$images" ] || die "the air-gap bundle $bundle has no images/ directory"
fi
[ -z "$k3s_binary" ] || [ -f "$k3s_binary" ] || die "HEARTH_K3S_BINARY=$k3s_binary does not exist"

# Hearth's effective settings from a config file, asked of the binary being installed
# (so that defaults are defined in one place), in a clean environment: the daemon reads
# HEARTH_* variables too, and the caller's (this installer's options included) are not
# the service's. As non-root (a prefix) the binary would answer its non-root data_dir
# default; the service runs as root, so the file's own value or /var/lib/hearth is used.
setting() { # setting KEY CONFIG_FILE
    if [ "$1" = data_dir ] && [ "$(id -u)" != 0 ]; then
        v=
        [ ! -f "$2" ] || v=$(sed -n "s/^[[:space:]]*data_dir[[:space:]]*=[[:space:]]*[\"']\(.*\)[\"'][[:space:]]*\$/\1/p" "$2" | head -n1)
        printf '%s\n' "${v:-/var/lib/hearth}"
        return
    fi
    c=/dev/null
    [ ! -f "$2" ] || c=$2
    env -i PATH="$PATH" "$binary" config show --config "$c" 2>/dev/null \
        | sed -n "s/^$1 = \"\(.*\)\"\$/\1/p" | head -n1
}

# --- the plan ------------------------------------------------------------------------
if [ -e "$root$bin_path" ]; then
    old=$("$root$bin_path" --version 2>/dev/null || echo "an unreadable version")
    done_or_would "upgrading" "upgrade" "$old to $version in ${root:-/}"
else
    done_or_would "installing" "install" "$version in ${root:-/}"
fi
[ "$dry_run" = 0 ] || say "--dry-run: the plan, nothing is changed"
# A kept config must suit the new binary before anything is replaced: an upgrade that
# stops here leaves the old installation as it was.
if [ -f "$root$conf_path" ]; then
    env -i PATH="$PATH" "$binary" config show --config "$root$conf_path" >/dev/null \
        || die "$root$conf_path is not valid for $version (see above): fix it and run the installer again; nothing was changed"
    kept_runtime=$(setting runtime "$root$conf_path")
    if [ -n "$kept_runtime" ] && ! provides "$kept_runtime"; then
        die "$root$conf_path sets runtime = \"$kept_runtime\", which $version does not provide (it provides: $runtimes): edit runtime there and run the installer again; nothing was changed"
    fi
fi

install_file() { # install_file SRC DEST MODE
    installed="$installed$2
"
    if [ "$dry_run" = 1 ]; then
        printf '  would install %s as %s (mode %s)\n' "$1" "$root$2" "$3"
        return
    fi
    mkdir -p "$root$(dirname "$2")"
    # Copy beside, then rename: a running daemon keeps its old binary until it restarts.
    cp "$1" "$root$2.new"
    chmod "$3" "$root$2.new"
    mv -f "$root$2.new" "$root$2"
}
installed=

install_file "$binary" "$bin_path" 0755
[ "$dry_run" = 1 ] || cmp -s "$binary" "$root$bin_path" \
    || die "the copy $root$bin_path differs from $binary (disk full?)"
install_file "$uninstall_src" "$uninstall_path" 0755
install_file "$unit_src" "$unit_path" 0644
for doc in README.md LICENSE THIRD-PARTY-LICENSES.md; do
    f=$(find_file "$doc" "$doc")
    [ -z "$f" ] || install_file "$f" "$doc_dir/$doc" 0644
done
if [ -n "$k3s_binary" ]; then
    install_file "$k3s_binary" "$k3s_path" 0755
fi

if [ -e "$root$conf_path" ]; then
    done_or_would kept keep "$root$conf_path"
    if [ -n "$runtime" ]; then
        have=$(setting runtime "$root$conf_path")
        [ "$have" = "$runtime" ] \
            || warn "HEARTH_RUNTIME=$runtime ignored: the kept $root$conf_path sets runtime \"$have\"; edit it to change"
    fi
else
    if [ "$dry_run" = 1 ]; then
        say "would write $root$conf_path"
    else
        say "writing $root$conf_path"
    fi
    runtime_line="# runtime = \"process\""
    [ -z "$runtime" ] || runtime_line="runtime = \"$runtime\""
    if [ "$dry_run" = 0 ]; then
        mkdir -p "$root$conf_dir"
        cat >"$root$conf_path.new" <<CONF
# Hearth configuration, written by the installer (a re-run keeps this file). Every key
# is optional: \`hearth config show\` prints the effective values, the README's
# "Configuration" lists them all. Each key can also be set as HEARTH_<KEY>.
# listen = "127.0.0.1:8470"
# serving_listen = "127.0.0.1:8471"
# HTTPS for kubectl and remote clients (CA and kubeconfig under data_dir);
# "0.0.0.0:8472" to serve the network, tls_sans for the names it is reached by.
# tls_listen = "127.0.0.1:8472"
# tls_sans = ["gpu-box.lan"]
# data_dir = "/var/lib/hearth"
$runtime_line
# log_level = "info"
#
# [metrics]
# public = false
#
# [gpu]
# time_slicing_replicas = 1
CONF
        chmod 0644 "$root$conf_path.new"
        mv -f "$root$conf_path.new" "$root$conf_path"
    fi
fi

data_dir=$(setting data_dir "$root$conf_path")
[ -n "$data_dir" ] || data_dir=/var/lib/hearth
listen=$(setting listen "$root$conf_path")
[ -n "$listen" ] || listen=127.0.0.1:8470
tls_listen=$(setting tls_listen "$root$conf_path")

if [ -n "$images" ]; then
    image_dir=$data_dir/k3s/agent/images
    # The data dir and what is below it are private (the unit's StateDirectoryMode=0700);
    # the directories above it stay traversable.
    run mkdir -p "$root$(dirname "$data_dir")"
    run sh -c 'umask 077 && mkdir -p "$1"' sh "$root$image_dir"
    for img in "$images"/*; do
        [ -f "$img" ] || continue
        run cp "$img" "$root$image_dir/"
        done_or_would copied copy "the k3s image archive ${img##*/} to $root$image_dir/"
    done
fi

if [ "$dry_run" = 0 ]; then
    mkdir -p "$root$(dirname "$manifest")"
    printf '%s' "$installed" >"$root$manifest"
fi

# --- start ---------------------------------------------------------------------------
url_host() { # the address to reach a listen address from this host
    case $1 in
        0.0.0.0:*) printf '127.0.0.1:%s\n' "${1##*:}" ;;
        '[::]:'*) printf '[::1]:%s\n' "${1##*:}" ;;
        *) printf '%s\n' "$1" ;;
    esac
}
api=http://$(url_host "$listen")

wait_ready() {
    timeout=${HEARTH_READY_TIMEOUT:-120}
    if command -v curl >/dev/null 2>&1; then
        get() { curl -fsS -o /dev/null --max-time 2 "$1"; }
    elif command -v wget >/dev/null 2>&1; then
        get() { wget -q -O /dev/null -T 2 "$1"; }
    else
        warn "neither curl nor wget: not waiting for $api/readyz"
        return 0
    fi
    say "waiting for $api/readyz (up to ${timeout}s)"
    i=0
    while [ "$i" -lt "$timeout" ]; do
        if get "$api/readyz" 2>/dev/null; then
            say "ready"
            return 0
        fi
        sleep 1
        i=$((i + 1))
    done
    systemctl --no-pager status hearth.service >&2 || true
    die "hearth did not become ready in ${timeout}s: see journalctl -u hearth -n 100, and $api/readyz names what is missing"
}

manual_start=
if [ -n "$root" ]; then
    if command -v systemctl >/dev/null 2>&1; then
        # --root only writes the [Install] links under $root; no daemon is asked anything.
        run systemctl --root="$root" --quiet enable hearth.service
        done_or_would enabled enable "hearth.service in $root (it starts when that tree boots with systemd)"
    fi
    manual_start="$root$bin_path serve --config $root$conf_path --data-dir $root$data_dir"
elif [ "$systemd" = 1 ]; then
    run systemctl daemon-reload
    if [ "${HEARTH_SKIP_START:-0}" = 1 ]; then
        run systemctl enable hearth.service
        if [ "$dry_run" = 1 ]; then
            say "HEARTH_SKIP_START=1: it would not be started; start it then with: systemctl start hearth"
        else
            say "HEARTH_SKIP_START=1: not started; start it with: systemctl start hearth"
        fi
    elif systemctl --quiet is-active hearth.service; then
        # An upgrade runs the new binary. KillMode=process: workloads keep running and
        # the new daemon adopts them.
        run systemctl enable hearth.service
        run systemctl restart hearth.service
        [ "$dry_run" = 1 ] || wait_ready
    else
        run systemctl enable --now hearth.service
        [ "$dry_run" = 1 ] || wait_ready
    fi
else
    manual_start="$bin_path serve"
fi

# --- what next -----------------------------------------------------------------------
echo
if [ "$dry_run" = 1 ]; then
    say "--dry-run: $version would be installed; nothing was changed"
else
    say "$version installed"
fi
# Hints that fit the install done: a prefix installed as a user is that user's own (no
# sudo, its log inside the prefix); as root, the data is root's.
if [ "$(id -u)" = 0 ]; then
    sudo='sudo '
    owner='root only'
else
    sudo=
    owner="mode 0600, $(id -un 2>/dev/null || echo yours)'s"
fi
if [ -n "$root" ]; then
    log_dir=$root/var/log
else
    log_dir=/var/log
fi
if [ -n "$manual_start" ]; then
    if [ -n "$root" ]; then
        if [ "$dry_run" = 1 ]; then
            say "it would be installed into $root (the host's systemd does not manage a prefix); it would run in place by hand:"
        else
            say "installed into $root (the host's systemd does not manage a prefix); run it in place by hand:"
        fi
    else
        say "systemd is not running on this machine: start the daemon by hand (as root; it reads $conf_path):"
    fi
    echo
    echo "    $manual_start"
    echo "    # or in the background:  mkdir -p $log_dir && nohup $manual_start >>$log_dir/hearth.log 2>&1 &"
    echo
fi
token=$root$data_dir/admin.token
kubeconfig=$root$data_dir/kubeconfig
cat <<NEXT
  API:         $api   (HTTPS for kubectl: https://$(url_host "${tls_listen:-127.0.0.1:8472}"))
  admin token: $token   ($owner; written on the first start)
  kubeconfig:  $kubeconfig    ($owner; rewritten on every start)
  config:      $root$conf_path
  docs:        $root$doc_dir/README.md
  uninstall:   $root$uninstall_path   (keeps the data; --purge removes it)

Next steps:
  1. Check it:   curl -s $api/readyz; TOKEN=\$(${sudo}cat $token)
                 curl -s -H "Authorization: Bearer \$TOKEN" $api/hearth/v1/whoami
  2. kubectl:    mkdir -p ~/.kube && ${sudo}cat $kubeconfig > ~/.kube/hearth && chmod 600 ~/.kube/hearth
                 export KUBECONFIG=~/.kube/hearth
                 kubectl get jobs -A
  3. Add a user: curl -s -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
                   -d '{"name":"alice"}' $api/hearth/v1/users    (the answer holds alice's token)
NEXT

"""installer/install.sh, hearth-uninstall.sh and scripts/release, run for real.

The installer runs under dash (it is piped to `sh`, which is dash on Debian and
Ubuntu) into a HEARTH_ROOT prefix, from a built binary and from the release tarball
scripts/release makes (with the debug binary, via HEARTH_BINARY). scripts/test runs
this with HEARTH_BIN set to target/debug/hearth.
"""

import hashlib
import io
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
INSTALL = REPO / "installer" / "install.sh"
UNINSTALL = REPO / "installer" / "hearth-uninstall.sh"
BIN = Path(os.environ.get("HEARTH_BIN", REPO / "target" / "debug" / "hearth")).resolve()
DASH = shutil.which("dash")


def sh(args, env=None, check=True, cwd=None):
    """Runs a command with only the environment given (plus PATH), so no HEARTH_* of
    the caller leaks in; returns the completed process with stdout+stderr as text."""
    full = {"PATH": os.environ["PATH"], "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    full.update(env or {})
    proc = subprocess.run(
        [str(a) for a in args],
        env=full,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}")
    return proc


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def root():
    # Not pytest's tmp_path: its parents are 0700, and the daemon (as root) wants every
    # directory above its data dir traversable by others (README, "Files").
    d = Path(tempfile.mkdtemp(prefix="hearth-root-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def release():
    """scripts/release with the debug binary, a stand-in k3s and an image archive."""
    assert BIN.is_file(), f"{BIN} is not built"
    out = Path(tempfile.mkdtemp(prefix="hearth-dist-"))
    k3s_dir = out / "k3s-input"
    (k3s_dir / "images").mkdir(parents=True)
    k3s = k3s_dir / "k3s"
    k3s.write_text("#!/bin/sh\necho 'k3s version v1.35.0+k3s1 (stand-in)'\n")
    k3s.chmod(0o755)
    image = k3s_dir / "images" / "k3s-airgap-images-amd64.tar"
    with tarfile.open(image, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        data = b"[]"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    dist = out / "dist"
    sh(
        [REPO / "scripts" / "release"],
        env={
            "HEARTH_BINARY": BIN,
            "RELEASE_OUT": dist,
            "RELEASE_URL": f"file://{dist}",
            "K3S_BINARY": k3s,
            "K3S_IMAGES": k3s_dir / "images",
            "HOME": os.environ.get("HOME", "/root"),
            "CARGO_HOME": os.environ.get("CARGO_HOME", str(Path.home() / ".cargo")),
            "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup")),
        },
        cwd=REPO,
    )
    yield dist
    shutil.rmtree(out, ignore_errors=True)


def install(root, *args, **env):
    return sh([DASH, INSTALL, *args], env={"HEARTH_ROOT": root, **env})


def assert_installed(root):
    files = {
        "usr/local/bin/hearth": 0o755,
        "usr/local/bin/hearth-uninstall.sh": 0o755,
        "etc/systemd/system/hearth.service": 0o644,
        "etc/hearth/config.toml": 0o644,
        "usr/local/share/doc/hearth/README.md": 0o644,
        "usr/local/share/hearth/manifest": 0o644,
    }
    for rel, want in files.items():
        path = root / rel
        assert path.is_file(), f"{rel} was not installed"
        assert mode(path) == want, f"{rel} has mode {oct(mode(path))}, want {oct(want)}"
    # The unit's Documentation= names a file that the installer put there.
    unit = (root / "etc/systemd/system/hearth.service").read_text()
    docs = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("Documentation=")]
    assert docs, "the unit has no Documentation="
    for doc in docs:
        assert doc.startswith("file:/"), doc
        assert (root / doc.removeprefix("file:/")).is_file(), f"{doc} does not exist"
    # `systemctl --root` enabled it inside the prefix only.
    if shutil.which("systemctl"):
        link = root / "etc/systemd/system/multi-user.target.wants/hearth.service"
        assert os.readlink(link) == "/etc/systemd/system/hearth.service"


def test_shellcheck_posix():
    sh(["shellcheck", "--shell=sh", INSTALL, UNINSTALL])


def test_binary_install_rerun_uninstall_purge(root):
    out = install(root, HEARTH_BINARY=BIN).stdout
    assert_installed(root)
    assert sha256(root / "usr/local/bin/hearth") == sha256(BIN)
    # No systemd for a prefix: the manual start, with the prefix's own paths.
    manual = f"{root}/usr/local/bin/hearth serve --config {root}/etc/hearth/config.toml --data-dir {root}/var/lib/hearth"
    assert manual in out, out
    assert f"{root}/var/lib/hearth/admin.token" in out

    # The printed command starts the daemon (ports moved to 0 so tests can run side by side).
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env = {k: v for k, v in env.items() if not k.startswith("HEARTH_")}
    daemon = subprocess.Popen(
        manual.split() + ["--listen", "127.0.0.1:0", "--serving-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    token = root / "var/lib/hearth/admin.token"
    try:
        deadline = time.monotonic() + 60
        while not (token.exists() and (root / "var/lib/hearth/kubeconfig").exists()):
            assert daemon.poll() is None, daemon.stderr.read().decode()
            assert time.monotonic() < deadline, "the daemon wrote no admin.token in 60 s"
            time.sleep(0.05)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert mode(token) == 0o600

    # Re-run: an upgrade. The config (edited by its owner) and the data are kept.
    config = root / "etc/hearth/config.toml"
    config.write_text(config.read_text() + 'log_level = "debug"\n')
    before = config.read_bytes()
    token_before = token.read_bytes()
    out = install(root, HEARTH_BINARY=BIN).stdout
    assert "upgrading hearth" in out and "kept" in out, out
    assert config.read_bytes() == before
    assert token.read_bytes() == token_before
    assert_installed(root)

    # A kept config the new binary refuses stops the upgrade before anything changes.
    config.write_text(before.decode() + "no_such_key = 1\n")
    binary_mtime = (root / "usr/local/bin/hearth").stat().st_mtime_ns
    proc = sh([DASH, INSTALL], env={"HEARTH_ROOT": root, "HEARTH_BINARY": BIN}, check=False)
    assert proc.returncode != 0 and "nothing was changed" in proc.stdout, proc.stdout
    assert "no_such_key" in proc.stdout, proc.stdout
    assert (root / "usr/local/bin/hearth").stat().st_mtime_ns == binary_mtime
    config.write_bytes(before)

    # Uninstall keeps the data and the config...
    out = sh([DASH, root / "usr/local/bin/hearth-uninstall.sh"], env={"HEARTH_ROOT": root}).stdout
    for gone in (
        "usr/local/bin/hearth",
        "usr/local/bin/hearth-uninstall.sh",
        "etc/systemd/system/hearth.service",
        "etc/systemd/system/multi-user.target.wants/hearth.service",
        "usr/local/share/doc/hearth",
        "usr/local/share/hearth",
    ):
        assert not os.path.lexists(root / gone), f"{gone} is still there after uninstall"
    assert token.read_bytes() == token_before and config.read_bytes() == before
    assert "kept the data" in out

    # ...a reinstall finds them, and --purge removes them.
    install(root, HEARTH_BINARY=BIN)
    assert config.read_bytes() == before
    sh([DASH, root / "usr/local/bin/hearth-uninstall.sh", "--purge"], env={"HEARTH_ROOT": root})
    assert not (root / "var/lib/hearth").exists()
    assert not (root / "etc/hearth").exists()
    assert not (root / "usr/local/bin/hearth").exists()


def test_systemd_analyze_verifies_the_installed_unit(root):
    install(root, HEARTH_BINARY=BIN)
    # verify --root resolves every unit inside the root, the targets the unit names
    # included: give it the host's unit directory.
    host_units = Path("/lib/systemd/system")
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    out = sh(
        ["systemd-analyze", f"--root={root}", "verify", "/etc/systemd/system/hearth.service"],
        check=False,
    )
    assert out.returncode == 0 and "hearth.service" not in out.stdout, out.stdout


def test_dry_run_changes_nothing(root):
    out = install(root, "--dry-run", HEARTH_BINARY=BIN).stdout
    assert f"would install {BIN} as {root}/usr/local/bin/hearth (mode 0755)" in out, out
    assert list(root.iterdir()) == []


def test_no_systemd_host_dry_run_prints_the_manual_start():
    # The host layout (no HEARTH_ROOT) on a machine without systemd, as this container
    # and CI are: --dry-run shows the plan for /usr/local and the command to start the
    # daemon by hand, and touches nothing.
    if os.getuid() != 0:
        pytest.skip("the host layout needs root")
    if Path("/run/systemd/system").exists():
        pytest.skip("systemd runs here: the manual-start path is not taken")
    watched = [Path("/usr/local/bin/hearth"), Path("/etc/hearth"), Path("/etc/systemd/system/hearth.service")]
    before = [(p.exists(), p.exists() and p.stat().st_mtime_ns) for p in watched]
    out = sh([DASH, INSTALL, "--dry-run"], env={"HEARTH_BINARY": BIN}).stdout
    assert f"would install {BIN} as /usr/local/bin/hearth (mode 0755)" in out, out
    assert "systemd is not running on this machine" in out, out
    assert "\n    /usr/local/bin/hearth serve\n" in out, out
    assert [(p.exists(), p.exists() and p.stat().st_mtime_ns) for p in watched] == before


# A stand-in for systemctl: PID 1 is not systemd in this container or in CI, so the real
# one cannot start a unit. It logs its arguments and runs the installed unit's
# ExecStart in a clean environment, as systemd would, for enable --now / restart, and
# stops it for kill / disable --now / stop.
STAND_IN_SYSTEMCTL = """#!/bin/sh
state=@STATE@
echo "$*" >>"$state/calls"
running() { [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; }
stop() {
    if running; then
        pid=$(cat "$state/pid"); kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    fi
    rm -f "$state/pid"
}
start() {
    exec_start=$(sed -n 's/^ExecStart=//p' /etc/systemd/system/hearth.service)
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin setsid $exec_start >>"$state/daemon.log" 2>&1 &
    echo $! >"$state/pid"
    echo "$!" >>"$state/pids"
}
case "$*" in
    "--quiet is-active hearth.service") running ;;
    "enable --now hearth.service") start ;;
    "restart hearth.service") stop; start ;;
    "disable --now hearth.service" | "stop hearth.service") stop ;;
    "kill --kill-who=all --signal=SIGTERM hearth.service") stop ;;
    "daemon-reload" | "enable hearth.service" | "--no-pager status hearth.service") ;;
    *) echo "stand-in systemctl: unexpected $*" >&2; exit 1 ;;
esac
"""

DRIVER = """set -eu
work=$1 install=$2 binary=$3 port=$4
# This mount namespace's own /run (with /run/systemd/system: "systemd runs"), /etc,
# /usr/local and /var/lib, so that the host layout is installed without touching the host.
mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system
cp -a /etc "$work/etc" && mount --bind "$work/etc" /etc
mount -t tmpfs tmpfs /usr/local
mount -t tmpfs tmpfs /var/lib
mkdir -p /etc/hearth
printf 'listen = "127.0.0.1:%s"\nserving_listen = "127.0.0.1:%s"\ntls_listen = "127.0.0.1:%s"\n' \
    "$port" "$((port + 1))" "$((port + 2))" >/etc/hearth/config.toml
export PATH="$work/bin:$PATH"
status=0
{
    HEARTH_BINARY=$binary HEARTH_READY_TIMEOUT=60 dash "$install" >"$work/install1.log" 2>&1
    cp /var/lib/hearth/admin.token "$work/token1"
    HEARTH_BINARY=$binary HEARTH_READY_TIMEOUT=60 dash "$install" >"$work/install2.log" 2>&1
    dash /usr/local/bin/hearth-uninstall.sh >"$work/uninstall.log" 2>&1
    ls -a /usr/local/bin /etc/systemd/system /var/lib/hearth /etc/hearth >"$work/after.txt" 2>&1 || true
    cmp -s /var/lib/hearth/admin.token "$work/token1" && echo kept >"$work/token-kept"
    HEARTH_BINARY=$binary HEARTH_SKIP_START=1 dash "$install" >"$work/install3.log" 2>&1
} || status=$?
"$work/bin/systemctl" stop hearth.service
exit $status
"""


def free_port_triple():
    import socket

    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 2 > 65535:
            continue
        try:
            socks = []
            for p in (port, port + 1, port + 2):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no three free ports in a row")


def test_systemd_host_path_with_a_stand_in_systemctl():
    """The branch taken on a systemd machine: daemon-reload, enable --now, the wait for
    /readyz, restart on an upgrade, and the uninstaller's kill and disable. The host
    layout is installed inside a private mount namespace."""
    if os.getuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private mount namespace")
    work = Path(tempfile.mkdtemp(prefix="hearth-systemd-"))
    work.chmod(0o755)
    try:
        state = work / "state"
        state.mkdir()
        (work / "bin").mkdir()
        systemctl = work / "bin" / "systemctl"
        systemctl.write_text(STAND_IN_SYSTEMCTL.replace("@STATE@", str(state)))
        systemctl.chmod(0o755)
        (work / "driver.sh").write_text(DRIVER)
        port = free_port_triple()
        proc = sh(["unshare", "-m", "--propagation", "private", "sh", work / "driver.sh", work, INSTALL, BIN, port], check=False)
        logs = {f: (work / f).read_text() for f in ("install1.log", "install2.log", "uninstall.log", "install3.log") if (work / f).exists()}
        assert proc.returncode == 0, f"{proc.stdout}\n{logs}\n{(state / 'daemon.log').read_text() if (state / 'daemon.log').exists() else ''}"
        calls = (state / "calls").read_text().splitlines()
        first, upgrade, uninstall = logs["install1.log"], logs["install2.log"], logs["uninstall.log"]
        api = f"http://127.0.0.1:{port}"
        assert f"waiting for {api}/readyz" in first and "hearth-install: ready" in first, first
        assert f"API:         {api}" in first and "/var/lib/hearth/admin.token" in first, first
        assert "systemd is not running" not in first
        assert "upgrading hearth" in upgrade and "hearth-install: ready" in upgrade, upgrade
        assert calls == [
            "daemon-reload",
            "--quiet is-active hearth.service",
            "enable --now hearth.service",
            "daemon-reload",
            "--quiet is-active hearth.service",
            "enable hearth.service",
            "restart hearth.service",
            "--quiet is-active hearth.service",
            "kill --kill-who=all --signal=SIGTERM hearth.service",
            "disable --now hearth.service",
            "daemon-reload",
            # HEARTH_SKIP_START=1: enabled, not started.
            "daemon-reload",
            "enable hearth.service",
            "stop hearth.service",
        ], calls
        assert "HEARTH_SKIP_START=1: not started" in logs["install3.log"], logs["install3.log"]
        # Two daemons ran (the restart ran the new binary), and none is left.
        pids = (state / "pids").read_text().split()
        assert len(pids) == 2
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        after = (work / "after.txt").read_text()
        assert "hearth.service" not in after and "\nhearth\n" not in after, after
        assert (work / "token-kept").exists(), uninstall
    finally:
        if not os.environ.get("KEEP_WORK"):
            shutil.rmtree(work, ignore_errors=True)


def test_needs_root():
    if os.getuid() != 0:
        pytest.skip("runs as root to drop to nobody")
    proc = sh(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", DASH, INSTALL],
        env={"HEARTH_BINARY": BIN},
        check=False,
    )
    assert proc.returncode != 0
    assert "must run as root" in proc.stdout, proc.stdout


def tarball_of(dist):
    (tarball,) = (t for t in dist.glob("hearth-*-*linux*.tar.gz") if not t.name.startswith("hearth-airgap-"))
    return tarball


def test_release_tarball_contents(release):
    tarball = tarball_of(release)
    name = tarball.name.removesuffix(".tar.gz")
    version = sh([BIN, "--version"]).stdout.split()[1]
    assert name.startswith(f"hearth-{version}-")
    assert (release / f"{tarball.name}.sha256").read_text() == f"{sha256(tarball)}  {tarball.name}\n"
    with tarfile.open(tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for f, want in {
            "hearth": 0o755,
            "hearth.service": 0o644,
            "install.sh": 0o755,
            "hearth-uninstall.sh": 0o755,
            "README.md": 0o644,
            "LICENSE": 0o644,
            "THIRD-PARTY-LICENSES.md": 0o644,
            "BUILDINFO": 0o644,
            "SHA256SUMS": 0o644,
        }.items():
            m = members[f"{name}/{f}"]
            assert m.mode & 0o777 == want, f"{f}: {oct(m.mode)}"
        licenses = tar.extractfile(f"{name}/THIRD-PARTY-LICENSES.md").read().decode()
    # A crate the daemon links, with the license cargo metadata gives.
    assert "| actix-web |" in licenses and "MIT OR Apache-2.0" in licenses


def test_install_from_tarball_beside_and_url(release, root):
    tarball = tarball_of(release)
    # Beside: install.sh, the tarball and its .sha256 in one directory.
    out = sh([DASH, release / "install.sh"], env={"HEARTH_ROOT": root}).stdout
    assert f"verified {tarball.name}" in out, out
    assert_installed(root)
    assert sha256(root / "usr/local/bin/hearth") == sha256(BIN)
    assert (root / "usr/local/share/doc/hearth/LICENSE").is_file()
    assert (root / "usr/local/share/doc/hearth/THIRD-PARTY-LICENSES.md").is_file()
    # By URL (file://), the .sha256 fetched beside it; an upgrade keeps the config.
    config = (root / "etc/hearth/config.toml").read_bytes()
    out = sh([DASH, INSTALL], env={"HEARTH_ROOT": root, "HEARTH_RELEASE_URL": f"file://{tarball}"}).stdout
    assert f"verified {tarball.name}" in out and "upgrading" in out, out
    assert (root / "etc/hearth/config.toml").read_bytes() == config


def test_piped_install_fetches_the_published_release(release, root):
    # `curl -sfL <release-url>/install.sh | sudo sh -`: the published copy, read from
    # stdin with no variables set and nothing beside it.
    script = (release / "install.sh").read_bytes()
    proc = subprocess.run(
        [DASH, "-s"],
        input=script,
        cwd=root,
        env={"PATH": os.environ["PATH"], "HEARTH_ROOT": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=300,
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, out
    assert f"downloading file://{tarball_of(release)}" in out, out
    assert_installed(root)


def test_corrupted_tarball_is_refused(release, root):
    tarball = tarball_of(release)
    bad_dir = Path(tempfile.mkdtemp(prefix="hearth-bad-"))
    try:
        bad = bad_dir / tarball.name
        shutil.copy(tarball, bad)
        shutil.copy(release / f"{tarball.name}.sha256", bad_dir)
        shutil.copy(INSTALL, bad_dir / "install.sh")
        with open(bad, "r+b") as f:
            f.seek(4096)
            byte = f.read(1)
            f.seek(4096)
            f.write(bytes([byte[0] ^ 0xFF]))
        for env in ({}, {"HEARTH_RELEASE_URL": f"file://{bad}"}):
            proc = sh([DASH, bad_dir / "install.sh"], env={"HEARTH_ROOT": root, **env}, check=False)
            assert proc.returncode != 0, proc.stdout
            assert "checksum mismatch" in proc.stdout and "nothing was installed" in proc.stdout, proc.stdout
            assert list(root.iterdir()) == [], "a refused tarball left files behind"
        # No .sha256 at all: refused too.
        (bad_dir / f"{tarball.name}.sha256").unlink()
        shutil.copy(tarball, bad)
        proc = sh([DASH, bad_dir / "install.sh"], env={"HEARTH_ROOT": root}, check=False)
        assert proc.returncode != 0 and "unverified" in proc.stdout, proc.stdout
    finally:
        shutil.rmtree(bad_dir)


def test_airgap_bundle_for_k3s(release, root):
    (bundle,) = release.glob("hearth-airgap-*.tar.gz")
    assert (release / f"{bundle.name}.sha256").is_file()
    env = {"HEARTH_ROOT": root, "HEARTH_AIRGAP_BUNDLE": bundle}
    k3s_runs = "k3s" in runtimes()
    if not k3s_runs:
        # The binary does not run k3s yet: HEARTH_RUNTIME=k3s is refused by name before
        # anything is installed, and the bundle still installs for later.
        proc = sh([DASH, release / "install.sh"], env={**env, "HEARTH_RUNTIME": "k3s"}, check=False)
        assert proc.returncode != 0 and "HEARTH_RUNTIME=k3s" in proc.stdout, proc.stdout
        assert list(root.iterdir()) == [], "a refused runtime left files behind"
    else:
        env["HEARTH_RUNTIME"] = "k3s"
    out = sh([DASH, release / "install.sh"], env=env).stdout
    assert f"verified {bundle}" in out, out
    k3s = root / "usr/local/bin/k3s"
    assert mode(k3s) == 0o755
    assert "stand-in" in sh([k3s]).stdout
    assert (root / "var/lib/hearth/k3s/agent/images/k3s-airgap-images-amd64.tar").is_file()
    assert mode(root / "var/lib/hearth") == 0o700 and mode(root / "var/lib") == 0o755
    assert ('runtime = "k3s"' in (root / "etc/hearth/config.toml").read_text()) == k3s_runs
    # The uninstaller removes the k3s binary it installed (the manifest lists it).
    sh([DASH, root / "usr/local/bin/hearth-uninstall.sh"], env={"HEARTH_ROOT": root})
    assert not k3s.exists()


def runtimes():
    """The runtimes the binary provides (`hearth config runtimes`), as the installer asks."""
    return sh([BIN, "config", "runtimes"]).stdout.split()


def said(out, prog):
    """The lines a script said about itself (`prog: ...`), without the prefix."""
    return [line.removeprefix(f"{prog}: ") for line in out.splitlines() if line.startswith(f"{prog}: ")]


def test_dry_runs_say_what_would_be_done_not_what_was(root):
    out = install(root, "--dry-run", HEARTH_BINARY=BIN).stdout
    lines = said(out, "hearth-install")
    assert any(line.startswith("would install hearth") for line in lines), out
    assert f"would write {root}/etc/hearth/config.toml" in lines, out
    if shutil.which("systemctl"):
        assert any(line.startswith(f"would enable hearth.service in {root}") for line in lines), out
    for done in ("enabled", "kept", "installing", "upgrading", "writing", "copied"):
        assert not any(line.startswith(done) for line in lines), f"{done!r} in a dry run:\n{out}"
    assert list(root.iterdir()) == []

    install(root, HEARTH_BINARY=BIN)
    out = install(root, "--dry-run", HEARTH_BINARY=BIN).stdout
    lines = said(out, "hearth-install")
    assert any(line.startswith("would upgrade hearth") for line in lines), out
    assert f"would keep {root}/etc/hearth/config.toml" in lines, out
    assert not any(line.startswith(("kept", "enabled", "upgrading")) for line in lines), out

    uninstaller = root / "usr/local/bin/hearth-uninstall.sh"
    for args in ([], ["--purge"]):
        out = sh([DASH, uninstaller, "--dry-run", *args], env={"HEARTH_ROOT": root}).stdout
        lines = said(out, "hearth-uninstall")
        assert f"would remove {root}/usr/local/bin/hearth" in lines, out
        assert lines[-1] == "--dry-run: hearth would be uninstalled; nothing was changed", out
        if args:
            assert f"would purge {root}/etc/hearth" in lines, out
        else:
            assert any(line.startswith(f"would keep the data in {root}/var/lib/hearth") for line in lines), out
        for done in ("removed", "purged", "kept", "hearth is uninstalled"):
            assert not any(line.startswith(done) for line in lines), f"{done!r} in a dry run:\n{out}"
    assert (root / "usr/local/bin/hearth").is_file() and (root / "etc/hearth/config.toml").is_file()


def test_a_runtime_the_binary_lacks_is_refused_before_anything_changes(root):
    have = runtimes()
    assert "process" in have, have
    provides = ", ".join(have)
    lacking = [r for r in ("docker", "k3s") if r not in have]
    for runtime in lacking + ["no-such-runtime"]:
        proc = sh([DASH, INSTALL], env={"HEARTH_ROOT": root, "HEARTH_BINARY": BIN, "HEARTH_RUNTIME": runtime}, check=False)
        assert proc.returncode != 0, proc.stdout
        assert f"HEARTH_RUNTIME={runtime}" in proc.stdout and f"it provides: {provides}" in proc.stdout, proc.stdout
        assert list(root.iterdir()) == [], "a refused runtime left files behind"
    # One the binary lists is written into the new config.
    install(root, HEARTH_BINARY=BIN, HEARTH_RUNTIME="process")
    config = root / "etc/hearth/config.toml"
    assert 'runtime = "process"' in config.read_text()
    # A kept config naming a runtime the binary lacks (what a HEARTH_RUNTIME=docker
    # install used to leave) stops a re-run before anything is replaced.
    for runtime in lacking:
        config.write_text(f'runtime = "{runtime}"\n')
        binary_mtime = (root / "usr/local/bin/hearth").stat().st_mtime_ns
        proc = sh([DASH, INSTALL], env={"HEARTH_ROOT": root, "HEARTH_BINARY": BIN}, check=False)
        assert proc.returncode != 0, proc.stdout
        assert f'runtime = "{runtime}"' in proc.stdout and "nothing was changed" in proc.stdout, proc.stdout
        assert (root / "usr/local/bin/hearth").stat().st_mtime_ns == binary_mtime


def outside(out, root, needle):
    """Words of `out` holding `needle` that do not lie under `root`."""
    return [w for w in out.split() if needle in w and not w.lstrip("'\">(").startswith(str(root))]


def test_prefix_hints_fit_the_install_done(root):
    # As root into a prefix: the background log is inside the prefix too.
    out = install(root, HEARTH_BINARY=BIN).stdout
    assert f">>{root}/var/log/hearth.log" in out, out
    assert outside(out, root, "/var/log") == [], out
    if os.getuid() != 0:
        pytest.skip("the user's own prefix is tried as nobody, which needs root")
    # As a user into a prefix of their own: nothing needs sudo or root, and every path
    # in the hints is inside the prefix.
    mine = Path(tempfile.mkdtemp(prefix="hearth-user-root-"))
    try:
        os.chown(mine, 65534, 65534)
        mine.chmod(0o755)
        proc = sh(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", DASH, INSTALL],
            env={"HEARTH_ROOT": mine, "HEARTH_BINARY": BIN},
        )
        out = proc.stdout
        assert "sudo" not in out and "root only" not in out and "as root" not in out, out
        assert outside(out, mine, "/var/") == [], out
        assert f"{mine}/var/lib/hearth/admin.token" in out, out
    finally:
        shutil.rmtree(mine, ignore_errors=True)

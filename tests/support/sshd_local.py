"""A real OpenSSH server on a free localhost port, run from a temporary folder: generated host
and user keys, its own sshd_config, and a client config to use with `ssh -F`. For the remote
tests and bench/bench_remote.py. Installs nothing: OpenSSH must be there (the README's install
command installs it).

Hosts in the client config: `flowtui-test` (the user's key: logs in), `stranger` (a key the
server does not know; the server would take a password), `nobody-home` (a closed port).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "flowtui-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@dataclass
class Sshd:
    dir: Path
    process: subprocess.Popen
    log: object

    @property
    def ssh_command(self) -> str:
        """For FLOWTUI_SSH_COMMAND."""
        return f"ssh -F {shlex.quote(str(self.dir / 'ssh_config'))}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


def missing() -> str | None:
    """Why no sshd can be started here, or None."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(binary) or shutil.which("ssh") is None:
        return ("OpenSSH is not installed: run the README's install command "
                "(it installs openssh-server and openssh-client)")
    return None


def start_sshd(d: Path) -> Sshd:
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    for name in ("host_key", "user_key", "stranger_key"):
        _keygen(d / name)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port, closed = _free_port(), _free_port()
    (d / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
AuthorizedKeysFile {d}/authorized_keys
PidFile {d}/sshd.pid
# The keys live under /tmp, which is world-writable: sshd's ownership checks would refuse them.
StrictModes no
UsePAM no
PubkeyAuthentication yes
# The server would take a password: BatchMode is what keeps the client from asking for one.
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
""")
    if os.geteuid() == 0:
        # sshd started as root needs its privilege-separation folder (the init script makes it).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = open(d / "sshd.log", "wb")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config")], stderr=log)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(
                    "sshd did not start: " + (d / "sshd.log").read_text()[-500:]
                ) from None
            time.sleep(0.05)
    host_pub = " ".join((d / "host_key.pub").read_text().split()[:2])
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    user = pwd.getpwuid(os.getuid()).pw_name
    common = f"""\
  HostName 127.0.0.1
  User {user}
  IdentitiesOnly yes
  UserKnownHostsFile {d}/known_hosts
  StrictHostKeyChecking yes
  ConnectTimeout 20
"""
    (d / "ssh_config").write_text(f"""\
Host {HOST}
  Port {port}
  IdentityFile {d}/user_key
{common}
Host stranger
  Port {port}
  IdentityFile {d}/stranger_key
  PasswordAuthentication yes
{common}
Host nobody-home
  Port {closed}
  IdentityFile {d}/user_key
{common}
""")
    return Sshd(d, proc, log)

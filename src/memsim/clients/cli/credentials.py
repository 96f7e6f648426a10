"""The machine's admin credential: what root is to the kernel. `memsim up`
makes a new one for every machine, hands it to the services and keeps it in
the run directory, readable by the user who started the machine only; a
command that writes a sysctl or reboots reads it from there."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from memsim.clients.cli.state import run_dir

ENV = "MEMSIM_ADMIN_TOKEN"


def token_path() -> Path:
    return run_dir() / "admin_token"


def new_admin_token() -> str:
    """A fresh token, written where the commands find it (mode 0600)."""
    token = secrets.token_urlsafe(24)
    path = token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def admin_token() -> str:
    """MEMSIM_ADMIN_TOKEN if set, else the running machine's; "" if this
    user cannot read it (the service then refuses as it refuses a user)."""
    if ENV in os.environ:
        return os.environ[ENV]
    try:
        return token_path().read_text().strip()
    except OSError:
        return ""


def forget_admin_token() -> None:
    token_path().unlink(missing_ok=True)

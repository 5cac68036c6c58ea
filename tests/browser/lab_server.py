"""A throw-away JupyterLab server for the browser check: free port, random token, isolated state.

Everything JupyterLab would otherwise read from or write to the user's home (config, settings,
workspaces, runtime files, IPython history) goes to one temporary folder, so the check neither
depends on nor disturbs a developer's own JupyterLab, and two checks can run side by side.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import processes

# User settings written before start. Autosave off: the executed notebook (outputs, moved slider)
# must never be written back into the repository. Notifications off: no news/update toasts over
# the page (and no request to the internet). Windowing off: every cell stays in the DOM, so the
# check sees all prompts and outputs without scrolling through a virtualised notebook.
SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port():
    """A TCP port nobody listens on right now (the server is told not to try others)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """Context manager: `with JupyterLab(root_dir, env) as lab: driver.get(lab.url_for(path))`.

    Leaving the block always stops the server and every process it started (kernels included),
    also when the block raised.
    """

    def __init__(self, root_dir, env=None, startup_timeout=120.0):
        self.root_dir = Path(root_dir).resolve()
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.token = secrets.token_hex(24)
        self.port = None
        self.proc = None
        self.tmp = None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, path):
        """The JupyterLab URL that opens `path` (relative to root_dir) in its document viewer."""
        return f"{self.base_url}/lab/tree/{quote(Path(path).as_posix())}?token={self.token}"

    def log_tail(self, chars=4000):
        """The end of the server's log (stdout and stderr), for failure messages."""
        try:
            return (self.tmp / "lab.log").read_text(errors="replace")[-chars:]
        except (OSError, TypeError):
            return ""

    def __enter__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="ff-lab-"))
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def _start(self):
        names = ("config", "data", "runtime", "ipython", "settings", "workspaces", "checkpoints")
        dirs = {name: self.tmp / name for name in names}
        for d in dirs.values():
            d.mkdir()
        for rel, values in SETTINGS.items():
            f = dirs["settings"] / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(values))
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            "JUPYTER_DATA_DIR": str(dirs["data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "IPYTHONDIR": str(dirs["ipython"]),
            **self.extra_env,
        }
        self.port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",  # fail rather than silently serve on another port
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            f"--LabApp.user_settings_dir={dirs['settings']}",
            f"--LabApp.workspaces_dir={dirs['workspaces']}",
            # An absolute folder: no .ipynb_checkpoints/ appears next to the notebook.
            f"--FileCheckpoints.checkpoint_dir={dirs['checkpoints']}",
            "--LabApp.extension_manager=readonly",  # the 'pypi' one may query PyPI from the page
            "--ServerApp.allow_root=True",  # CI containers run as root; harmless otherwise
        ]
        with open(self.tmp / "lab.log", "wb") as log:
            # Own session: a Ctrl-C in the terminal reaches only pytest, which then stops us in order.
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.root_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while not self._api("GET", "/api/status"):
            assert self.proc.poll() is None, (
                f"JupyterLab exited with code {self.proc.returncode} while starting:\n{self.log_tail()}"
            )
            assert time.monotonic() < deadline, (
                f"JupyterLab did not answer on port {self.port} within {self.startup_timeout:.0f} s:\n{self.log_tail()}"
            )
            time.sleep(0.5)

    def _api(self, method, path, timeout=5.0):
        """Call the server's REST API at `path` (/api/...): True on a 2xx answer, False when unreachable."""
        req = urllib.request.Request(
            self.base_url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return 200 <= r.status < 300
        except (urllib.error.URLError, OSError):
            return False

    def stop(self):
        """Shut the server down politely (it stops its kernels), then end whatever is left of its tree."""
        if self.proc is not None:
            procs = processes.tree(self.proc.pid)  # before shutdown: the kernels are still its children
            if self.proc.poll() is None:
                self._api("POST", "/api/shutdown")
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
            survivors = processes.end(procs)
            try:
                self.proc.wait(timeout=5)  # reap it: nothing stays behind, not even a zombie
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
            assert not survivors, f"JupyterLab processes survived SIGKILL: {survivors}"
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

"""Find and end whole process trees (Linux /proc), so the browser check leaves nothing running.

JupyterLab starts each kernel in a new session and chromium forks helpers of its own, so killing
the process we started (or its process group) is not enough: we list every descendant first and
end them all. A process is named by (pid, start time) so that a pid the system has meanwhile
given to an unrelated process is never signalled.

Some helpers (chromium's crashpad handler, zygotes) detach from their parent on purpose; without
`adopting_orphans` they would be re-parented to init, out of our sight, and stay zombies where
init does not reap promptly (some containers).
"""

import ctypes
import os
import signal
import time
from contextlib import contextmanager

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def _stat(pid):
    """(parent pid, start time, state) of `pid` read from /proc, or None when it no longer exists."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ")".
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]  # fields 4 (ppid), 22 (starttime), 3 (state)


def tree(root_pid):
    """The process `root_pid` and all its living descendants, as (pid, start time) pairs."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            children.setdefault(st[0], []).append((int(name), st[1]))
    root = _stat(root_pid)
    found = [] if root is None else [(root_pid, root[1])]
    for pid, _ in found:  # the list grows while we walk it: breadth-first
        found.extend(children.get(pid, []))
    return found


def alive(proc):
    """Whether (pid, start time) still runs; a zombie has finished and only waits to be reaped."""
    st = _stat(proc[0])
    return st is not None and st[1] == proc[1] and st[2] != b"Z"


def end(procs, grace=10.0):
    """SIGTERM every process in `procs`, SIGKILL those still running after `grace` seconds.

    Returns the processes that survived even SIGKILL (an empty list unless something is badly wrong).
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        running = [p for p in procs if alive(p)]
        for pid, _ in running:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while running and time.monotonic() < deadline:
            time.sleep(0.1)
            running = [p for p in running if alive(p)]
        if not running:
            return []
    return running


def _set_subreaper(on):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


@contextmanager
def adopting_orphans():
    """Make this process the reaper of everything started inside the block, and clean up on exit.

    Inside, a descendant whose parent dies is re-parented to us (not to init). On exit, every
    descendant that did not exist on entry is ended and reaped, and the previous state is restored.
    This is the safety net behind the orderly shutdowns of the server and the browser.
    """
    me = os.getpid()
    before = set(tree(me))
    _set_subreaper(True)
    try:
        yield
    finally:
        try:
            left = [p for p in tree(me) if p[0] != me and p not in before]
            survivors = end(left)
            for pid, _ in left:  # the zombies among them are now our children: reap them
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # not ours, or already reaped
                    pass
        finally:
            _set_subreaper(False)
        assert not survivors, f"processes survived SIGKILL: {survivors}"

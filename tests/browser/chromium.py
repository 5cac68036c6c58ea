"""Debian's headless chromium driven through Debian's chromedriver (Selenium), cleaned up on exit.

Both binaries come from apt (`make chromium`), so their versions always match and Selenium never
tries to download a driver or a browser (this machine reaches only the package registries).
"""

import os
import shutil
import tempfile
from contextlib import contextmanager

import processes
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root in a container: the sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a 64 MB /dev/shm, too small for chromium
    # Without these, chromium keeps calling Google services that a closed network never answers.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-crash-reporter",  # no crashpad helper that could outlive the browser
]


def require_chromium():
    """Fail (never skip) with the fix when chromium or chromedriver is not installed."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    assert not missing, f"{' and '.join(missing)} not installed: run `make chromium` (apt-get, as root)"


@contextmanager
def headless_chromium(width=1400, height=1000):
    """Yield a Selenium driver for a fresh headless chromium with an empty, temporary profile.

    On exit the browser is quit and every process chromedriver started is ended, also on failure.
    """
    require_chromium()
    profile = tempfile.mkdtemp(prefix="ff-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    service = Service(CHROMEDRIVER)
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        yield driver
    finally:
        # chromedriver -> chromium -> zygotes, renderers, utility processes: list them all first.
        driver_proc = getattr(service, "process", None)  # set only once chromedriver started
        procs = processes.tree(driver_proc.pid) if driver_proc is not None else []
        try:
            if driver is not None:
                driver.quit()
        finally:
            survivors = processes.end(procs)
            shutil.rmtree(profile, ignore_errors=True)
        assert not survivors, f"chromium processes survived SIGKILL: {survivors}"

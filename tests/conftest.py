"""Shared fixtures: the built site served on localhost, a headless Chromium, and a tabular
setting for the single-ratio estimator."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_build" / "html"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def chromium_executable() -> str | None:
    """Debian's Chromium, or $CHROMIUM_PATH; None means Playwright's own download."""
    if os.environ.get("CHROMIUM_PATH"):
        return os.environ["CHROMIUM_PATH"]
    return shutil.which("chromium") or (None if not Path("/usr/bin/chromium").exists() else "/usr/bin/chromium")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output readable
        pass


#: The edition without solutions (`make book-nosolutions`, which `make test` builds too).
NOSOLUTIONS_SITE = ROOT / "_build" / "nosolutions" / "_build" / "html"


def _serve(directory: Path):
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="session")
def site() -> Path:
    if not (SITE / "index.html").exists():
        pytest.fail("no built book in _build/html: run `make book` (or `make test`, which builds it)")
    return SITE


@pytest.fixture(scope="session")
def base_url(site):
    server, url = _serve(site)
    yield url
    server.shutdown()


@pytest.fixture(scope="session")
def nosolutions_site() -> Path:
    if not (NOSOLUTIONS_SITE / "index.html").exists():
        pytest.fail(f"no edition without solutions in {NOSOLUTIONS_SITE.relative_to(ROOT)}: run "
                    "`make book-nosolutions` (or `make test`, which builds it)")
    return NOSOLUTIONS_SITE


@pytest.fixture(scope="session")
def nosolutions_url(nosolutions_site):
    server, url = _serve(nosolutions_site)
    yield url
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def surrogate_setting():
    """A random MDP, two policies, 40,000 behaviour episodes of 10 steps, and the behaviour's
    exact advantages at the visited steps (for the single-ratio estimator's tests)."""
    from companion.mdp import policy_quantities, random_mdp, sample_trajectories, softmax_policy

    mdp = random_mdp(4, 3, rng=22, gamma=0.9, alpha=0.1)
    rng = np.random.default_rng(8)
    mu = softmax_policy(rng.normal(scale=0.5, size=(4, 3)))
    pi = softmax_policy(rng.normal(scale=1.0, size=(4, 3)))
    H, n = 10, 40_000
    traj = sample_trajectories(mdp, mu, n, H, rng=9, target=pi)
    A_mu = policy_quantities(mdp, mu, horizon=H).A           # (H, S, A)
    adv = A_mu[np.arange(H), traj.states, traj.actions]
    return mdp, pi, mu, H, traj, adv

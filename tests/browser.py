"""A real headless Chromium for the console's tests: Debian's `chromium` driven by Playwright.

Playwright's own browser downloads are never used (`playwright install` fetches a browser build
from outside the package registries): the tests launch the system's chromium by path. When it is
missing, `scripts/ensure-chromium.sh` installs it with apt-get where it can (root); where no
browser can be installed, the tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENSURE_SCRIPT = ROOT / "scripts" / "ensure-chromium.sh"
ARTIFACTS = ROOT / "tests" / "artifacts" / "console"
CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

_install_tried = False


def find_chromium() -> str | None:
    override = os.environ.get("AUTHBROKER_TEST_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for candidate in CANDIDATES:
        found = candidate if os.access(candidate, os.X_OK) else shutil.which(candidate)
        if found:
            return found
    return None


def chromium_or_skip() -> str:
    """The chromium executable, installing it once per run if missing; else skip the test."""
    global _install_tried
    path = find_chromium()
    if path is None and not _install_tried and ENSURE_SCRIPT.exists():
        _install_tried = True
        subprocess.run(["bash", str(ENSURE_SCRIPT)], check=False, timeout=1200)
        path = find_chromium()
    if path is None:
        pytest.skip(
            "chromium not available: /usr/bin/chromium is missing and scripts/ensure-chromium.sh "
            "could not install it (needs root and apt-get with Debian's package lists)"
        )
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("chromium not available: the playwright Python package is not installed")
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A launched headless Chromium (a Playwright Browser)."""
    from playwright.async_api import async_playwright

    executable = chromium_or_skip()
    async with async_playwright() as playwright:
        try:
            browser = await playwright.chromium.launch(
                executable_path=executable, args=LAUNCH_ARGS, headless=True
            )
        except Exception as exc:  # an installed browser that cannot start is a failure
            raise AssertionError(f"chromium at {executable} did not start: {exc}") from exc
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artifact: tests/artifacts/console/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path

"""Fixtures: one real earshot for the session (stack.py), Debian's Chromium
driven by Playwright, and a page that may reach 127.0.0.1 only.

Run through scripts/check-browser, which installs Chromium and Playwright,
builds the binaries and sets EARSHOT_BIN, EARSHOT_TRAFFIC_BIN and
EARSHOT_CHROMIUM.
"""

import os
import pathlib
import urllib.parse

import pytest
from playwright.sync_api import expect, sync_playwright

from stack import Stack, launch_chromium

ROOT = pathlib.Path(__file__).resolve().parents[2]
# A campaign's worth of traffic: enough for every breakdown to have rows,
# small enough for a debug loader to take in seconds.
HITS = 20_000
DAYS = 90


def screenshots_dir():
    d = pathlib.Path(os.environ.get("EARSHOT_SCREENSHOTS_DIR", ROOT / "target" / "browser-screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def stack():
    s = Stack(os.environ["EARSHOT_BIN"], os.environ["EARSHOT_TRAFFIC_BIN"], HITS, DAYS)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


class Guard:
    """What a context tried beyond 127.0.0.1 (aborted), and what the page
    logged as errors (CSP violations among them)."""

    def __init__(self):
        self.offsite = []
        self.errors = []
        self.urls = []

    def route(self, route):
        host = urllib.parse.urlsplit(route.request.url).hostname
        if route.request.url.startswith(("blob:", "data:")) or host == "127.0.0.1":
            route.continue_()
        else:
            self.offsite.append(route.request.url)
            route.abort("blockedbyclient")

    def watch(self, page):
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("request", lambda r: self.urls.append(r.url))


@pytest.fixture
def new_page(browser, request):
    """new_page(): a page in a fresh context (its own sessionStorage) whose
    requests beyond 127.0.0.1 are refused; at the end of the test none may
    have been attempted, and no page may have logged an error."""
    contexts = []
    guard = Guard()

    def make(**kw):
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC", **kw)
        ctx.route("**/*", guard.route)
        contexts.append(ctx)
        page = ctx.new_page()
        guard.watch(page)
        return page

    make.guard = guard
    yield make
    for ctx in contexts:
        ctx.close()
    assert guard.offsite == [], f"requests beyond 127.0.0.1: {guard.offsite}"
    # A 401 or 404 the page asked for shows up as a failed resource; anything
    # else (a CSP violation, an exception) fails the test.
    unexpected = [e for e in guard.errors if "Failed to load resource" not in e]
    assert unexpected == [], f"errors in the page: {unexpected}"


def ready(page):
    expect(page.locator("main")).to_have_attribute("data-state", "ready", timeout=30_000)


def sign_in(page, stack, key, path="/app"):
    page.goto(stack.base + path)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    ready(page)
    expect(page.locator("#sign-out")).to_be_visible()

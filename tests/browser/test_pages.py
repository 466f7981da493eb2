"""Every page: keyboard use, axe-core with no serious or critical
violation, a full-page screenshot under target/ for review; and /docs
rendering with nothing reachable but 127.0.0.1."""

import json
import pathlib

from playwright.sync_api import expect

from conftest import ready, screenshots_dir, sign_in
from stack import CAMPAIGN, EMPTY_CAMPAIGN

AXE = (pathlib.Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js").read_text()


def axe(page):
    """axe-core's serious and critical violations on the page as it is.
    axe is evaluated over the DevTools protocol: the page's CSP, which
    allows no script but its own, stays on."""
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.evaluate(AXE)
    result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result if v["impact"] in ("serious", "critical")
    ]


def check(page, name):
    page.screenshot(path=screenshots_dir() / f"{name}.png", full_page=True)
    bad = axe(page)
    assert bad == [], f"{name}: {json.dumps(bad, indent=1)}"


def test_every_page_passes_axe_and_is_captured(new_page, stack):
    page = new_page()
    page.goto(stack.base + "/app")
    ready(page)
    check(page, "sign-in")
    page.get_by_label("API key").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    check(page, "sign-in-refused")

    sign_in(page, stack, stack.keys["acme"])
    check(page, "campaigns")
    for name, path in [
        ("campaign-30d", f"/app/campaigns/{CAMPAIGN}"),
        ("campaign-7d-bots-country", f"/app/campaigns/{CAMPAIGN}?bots=1&by=country&series=impressions,completes"),
        ("campaign-empty", f"/app/campaigns/{EMPTY_CAMPAIGN}"),
        ("campaign-not-found", "/app/campaigns/globex-launch"),
    ]:
        page.goto(stack.base + path)
        ready(page)
        if name == "campaign-7d-bots-country":
            page.locator("[data-preset='7d']").click()
            ready(page)
        # The tables behind the charts, open.
        for summary in page.locator("details summary").all():
            summary.click()
        check(page, name)

    admin = new_page()
    sign_in(admin, stack, stack.keys["admin"])
    check(admin, "admin-campaigns")
    for name, path in [("admin-advertisers", "/app/admin/advertisers"), ("admin-keys", "/app/admin/keys"),
                       ("admin-manage", f"/app/campaigns/{CAMPAIGN}/manage")]:
        admin.goto(stack.base + path)
        ready(admin)
        if name == "admin-manage":
            admin.get_by_role("button", name="Make URLs").click()
            expect(admin.locator("#tracking-urls tr")).to_have_count(9)
        check(admin, name)


def test_the_campaign_page_works_from_the_keyboard(new_page, stack):
    page = new_page()
    sign_in(page, stack, stack.keys["acme"], f"/app/campaigns/{CAMPAIGN}")
    # Focus starts at the page's heading; Tab reaches the range presets.
    expect(page.get_by_role("heading", level=1)).to_be_focused()
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.dataset.preset") == "7d":
            break
    else:
        raise AssertionError("Tab never reached the 7 d preset")
    page.keyboard.press("Enter")
    ready(page)
    expect(page.locator("[data-preset='7d']")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("[data-preset='7d']")).to_be_focused()
    # The breakdown tabs move with the arrow keys.
    page.locator("[role=tab][data-dim=creative]").focus()
    page.keyboard.press("ArrowRight")
    ready(page)
    expect(page.locator("[role=tab][data-dim=episode]")).to_have_attribute("aria-selected", "true")
    expect(page.locator("[role=tab][data-dim=episode]")).to_be_focused()
    # Sorting from the keyboard.
    page.locator("#breakdown-table th[data-col=key] button").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#breakdown-table th[data-col=key]")).to_have_attribute("aria-sort", "descending")
    keys = page.eval_on_selector_all("#breakdown-table tbody tr", "rs => rs.map(r => r.dataset.key)")
    assert keys == sorted(keys, reverse=True) and len(keys) > 3


def test_docs_render_with_nothing_reachable_but_loopback(new_page, stack):
    page = new_page()
    page.goto(stack.base + "/docs")
    spec = json.loads(stack.api("/v1/openapi.json", "")[2])
    operations = sum(len([m for m in ops if m in ("get", "post", "patch", "delete", "put")]) for ops in spec["paths"].values())
    expect(page.locator(".opblock")).to_have_count(operations, timeout=30_000)
    expect(page.locator(".info .title")).to_contain_text(spec["info"]["title"])
    expect(page.locator(".opblock-summary-path[data-path='/v1/campaigns/{id}/report']")).to_have_count(1)
    page.screenshot(path=screenshots_dir() / "docs.png", full_page=True)
    assert len(new_page.guard.urls) > 3
    # new_page's guard: every request went to 127.0.0.1, none was refused.
    assert new_page.guard.offsite == []
    assert all(u.startswith(stack.base) for u in new_page.guard.urls), new_page.guard.urls

"""Admin pages: advertisers, campaigns, creatives, keys (the new key shown
once, revocation) and tracking URLs, each checked against the API."""

import json
import re
import uuid

from playwright.sync_api import expect

from conftest import ready, sign_in


def test_an_admin_bootstraps_a_tenant_and_its_key_works_until_revoked(new_page, stack):
    admin = stack.keys["admin"]
    suffix = uuid.uuid4().hex[:6]
    name = f"Initech {suffix}"
    page = new_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, stack, admin, "/app/admin/advertisers")

    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create advertiser").click()
    ready(page)
    advertisers = stack.json("/v1/advertisers", admin)
    created = next(a for a in advertisers if a["name"] == name)
    row = page.locator(f"tr[data-advertiser='{created['id']}']")
    expect(row).to_contain_text(name)
    row.get_by_role("button", name="Rename").click()
    page.get_by_label(f"New name for {name}").fill(name + " Corp")
    row.get_by_role("button", name="Save").click()
    ready(page)
    name += " Corp"
    expect(page.locator(f"tr[data-advertiser='{created['id']}'] td").first).to_have_text(name)
    assert any(a["name"] == name for a in stack.json("/v1/advertisers", admin))

    # A campaign for it, then its creative and tracking URLs.
    campaign = f"initech-{suffix}"
    page.get_by_role("link", name="Campaigns").click()
    ready(page)
    page.get_by_label("Id (used in pixel URLs)").fill(campaign)
    page.get_by_label("Advertiser", exact=True).select_option(label=name)
    page.get_by_label("Impression goal").fill("5000")
    page.get_by_label("Flight start").fill("2026-01-01")
    page.get_by_label("Flight end").fill("2026-12-31")
    page.get_by_role("button", name="Create campaign").click()
    ready(page)
    assert page.url == f"{stack.base}/app/campaigns/{campaign}/manage"
    c = stack.json(f"/v1/campaigns/{campaign}", admin)
    assert (c["advertiser_id"], c["impression_goal"], c["flight_start"], c["flight_end"]) == (created["id"], 5000, "2026-01-01", "2026-12-31")

    page.get_by_label("Id (used in pixel URLs)").fill("cr_15s")
    page.get_by_label("Duration (ms)").fill("15000")
    page.get_by_role("button", name="Save creative").click()
    ready(page)
    # Id, name (the id, by default), duration.
    expect(page.locator("#creatives tbody tr")).to_have_text(["cr_15scr_15s15,000"])
    page.get_by_label("Episode (optional)").fill("ep-7")
    page.get_by_label("Placement").select_option("mid")
    page.get_by_role("button", name="Make URLs").click()
    expect(page.locator("#tracking-urls tr[data-event]")).to_have_count(9)
    status, _, body = stack.api(f"/v1/campaigns/{campaign}/tracking-urls", admin, method="POST",
                                body={"creative": "cr_15s", "episode": "ep-7", "placement": "mid"})
    assert status == 200
    urls = json.loads(body)["urls"]
    shown = dict(page.eval_on_selector_all("#tracking-urls tr[data-event]", "rs => rs.map(r => [r.dataset.event, r.querySelector('td').textContent])"))
    assert shown == urls
    page.get_by_role("button", name="Copy the impression URL").click()
    expect(page.get_by_role("button", name="Copy the impression URL")).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == urls["impression"]

    # A key for the advertiser: shown once, then it signs in.
    page.get_by_role("link", name="Keys").click()
    ready(page)
    page.get_by_label("Name").fill(f"{name} dashboard")
    page.get_by_label("Advertiser", exact=True).select_option(label=name)
    page.get_by_role("button", name="Create key").click()
    new_key = page.locator("#new-key-value")
    expect(new_key).to_have_text(re.compile(r"^esk_[0-9a-f]{8}_\S{43}$"))
    key = new_key.text_content()
    page.get_by_role("button", name="Copy the new key").click()
    assert page.evaluate("() => navigator.clipboard.readText()") == key
    prefix = key[4:12]
    info = next(k for k in stack.json("/v1/keys", admin) if k["prefix"] == prefix)
    assert (info["scope"], info["advertiser_id"], info["revoked_at"]) == ("advertiser", created["id"], None)
    page.reload()
    ready(page)
    expect(page.locator("#new-key-value")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text(key)

    tenant = new_page()
    sign_in(tenant, stack, key)
    expect(tenant.locator("#signed-in-as")).to_have_text(f"{name} · key {prefix}")
    assert tenant.eval_on_selector_all("tr[data-campaign]", "rs => rs.map(r => r.dataset.campaign)") == [campaign]

    # Revoking takes two clicks, then the key is refused.
    revoke = page.locator(f"[data-revoke='{prefix}']")
    revoke.click()
    expect(revoke).to_have_text(f"Confirm: revoke {prefix}")
    assert next(k for k in stack.json("/v1/keys", admin) if k["prefix"] == prefix)["revoked_at"] is None
    revoke.click()
    ready(page)
    expect(page.locator(f"tr[data-prefix='{prefix}']")).to_contain_text("revoked")
    assert next(k for k in stack.json("/v1/keys", admin) if k["prefix"] == prefix)["revoked_at"] is not None
    assert stack.api("/v1/me", key)[0] == 401


def test_admin_pages_are_not_offered_to_advertiser_keys(new_page, stack):
    page = new_page()
    sign_in(page, stack, stack.keys["acme"])
    expect(page.locator("#nav a")).to_have_text(["Campaigns", "API reference"])
    for path in ["/app/admin/keys", "/app/admin/advertisers", "/app/campaigns/demo-spring-sale/manage"]:
        page.goto(stack.base + path)
        ready(page)
        expect(page.get_by_role("alert")).to_contain_text("Only admin keys")
        expect(page.locator("table")).to_have_count(0)

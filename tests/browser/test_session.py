"""Signing in and out: the key stays in the tab's sessionStorage, travels in
the Authorization header only, and a wrong or revoked key is told so."""

import json

from playwright.sync_api import expect

from conftest import ready, sign_in
from stack import CAMPAIGN

NOT_ACCEPTED = "This key was not accepted: it is wrong or has been revoked."


def stored_key(page):
    return page.evaluate("() => sessionStorage.getItem('earshot.key')")


def test_a_key_signs_in_names_its_advertiser_and_never_leaves_the_headers(new_page, stack):
    page = new_page()
    with_auth = []
    page.on("request", lambda r: r.url.startswith(stack.base + "/v1/") and with_auth.append(r.headers.get("authorization")))
    sign_in(page, stack, stack.keys["acme"])
    assert page.url == stack.base + "/app"
    expect(page.locator("#signed-in-as")).to_have_text(f"Acme Audio · key {stack.keys['acme'][4:12]}")
    assert stored_key(page) == stack.keys["acme"]
    # Advertiser keys get no admin pages.
    expect(page.get_by_role("link", name="Keys")).to_have_count(0)
    page.get_by_role("link", name="Spring sale").click()
    ready(page)
    assert with_auth and all(a == f"Bearer {stack.keys['acme']}" for a in with_auth), with_auth
    # Never in a URL the page asked for, never in what the server logged.
    urls = new_page.guard.urls
    assert urls and not [u for u in urls if stack.keys["acme"] in u or stack.keys["acme"][13:] in u]
    assert stack.keys["acme"][13:] not in stack.server_log()


def test_a_wrong_key_is_refused_with_a_clear_message(new_page, stack):
    page = new_page()
    page.goto(stack.base + "/app")
    for wrong in ["not a key", "esk_" + stack.keys["acme"][4:12] + "_" + "A" * 43]:
        page.get_by_label("API key").fill(wrong)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text(NOT_ACCEPTED)
        assert stored_key(page) is None
        expect(page.get_by_label("API key")).to_have_value("")
    expect(page.locator("#sign-out")).to_have_count(0)


def test_a_revoked_key_cannot_sign_in_and_is_signed_out_at_its_next_request(new_page, stack):
    admin = stack.keys["admin"]
    made = []
    for name in ["revoked before", "revoked during"]:
        status, _, body = stack.api("/v1/keys", admin, method="POST",
                                    body={"scope": "advertiser", "advertiser_id": stack.advertisers["acme"], "name": name})
        assert status == 201, body
        made.append(json.loads(body))
    before, during = made

    assert stack.api(f"/v1/keys/{before['id']}", admin, method="DELETE")[0] == 200
    page = new_page()
    page.goto(stack.base + "/app")
    page.get_by_label("API key").fill(before["key"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text(NOT_ACCEPTED)
    assert stored_key(page) is None

    sign_in(page, stack, during["key"])
    assert stack.api(f"/v1/keys/{during['id']}", admin, method="DELETE")[0] == 200
    page.get_by_role("link", name="Spring sale").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="no longer accepted")).to_have_text(
        "Your key is no longer accepted: it was revoked or is wrong. Sign in with a valid key.")
    assert stored_key(page) is None


def test_sign_out_forgets_the_key(new_page, stack):
    page = new_page()
    sign_in(page, stack, stack.keys["acme"], f"/app/campaigns/{CAMPAIGN}")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Signed out. The key is forgotten in this tab.")
    assert stored_key(page) is None
    # Nothing of the campaign is left, and a reload does not bring it back.
    expect(page.locator("#campaign")).to_have_count(0)
    page.reload()
    ready(page)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#campaign")).to_have_count(0)

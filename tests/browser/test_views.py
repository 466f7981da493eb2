"""Which campaigns a key sees, bookmarked views, and the page's states:
empty campaign, an API error's detail, Redis degraded."""

import datetime as dt
import json
import urllib.parse

from playwright.sync_api import expect

from conftest import ready, sign_in
from stack import CAMPAIGN, EMPTY_CAMPAIGN, OTHER_CAMPAIGN


def listed(page):
    return page.eval_on_selector_all("tr[data-campaign]", "rs => rs.map(r => r.dataset.campaign)")


def test_an_advertiser_never_sees_another_advertisers_campaign(new_page, stack):
    page = new_page()
    sign_in(page, stack, stack.keys["acme"])
    assert sorted(listed(page)) == sorted([CAMPAIGN, EMPTY_CAMPAIGN])
    expect(page.locator("main")).not_to_contain_text("Globex")

    # Its URL reads exactly like a campaign that does not exist.
    for campaign in [OTHER_CAMPAIGN, "no-such-campaign"]:
        page.goto(f"{stack.base}/app/campaigns/{campaign}")
        ready(page)
        expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
        status, _, body = stack.api(f"/v1/campaigns/{campaign}", stack.keys["acme"])
        assert status == 404
        expect(page.get_by_role("alert")).to_have_text(json.loads(body)["detail"])
        expect(page.get_by_role("alert")).to_have_text(f"no campaign {campaign}")
        expect(page.locator("#kpis")).to_have_count(0)

    other = new_page()
    sign_in(other, stack, stack.keys["globex"])
    assert listed(other) == [OTHER_CAMPAIGN]


def test_an_admin_sees_every_campaign_grouped_by_advertiser(new_page, stack):
    page = new_page()
    sign_in(page, stack, stack.keys["admin"])
    groups = page.eval_on_selector_all("section[data-advertiser]", """ss => ss.map(s => [s.querySelector('h2').textContent,
        [...s.querySelectorAll('tr[data-campaign]')].map(r => r.dataset.campaign)])""")
    assert [g for g in groups if g[0] in ("Acme Audio", "Globex Podcasts")] == [
        ["Acme Audio", sorted([CAMPAIGN, EMPTY_CAMPAIGN])],
        ["Globex Podcasts", [OTHER_CAMPAIGN]],
    ]


def state(page):
    """What a view shows: controls and numbers."""
    return page.evaluate("""() => ({
        pressed: [...document.querySelectorAll('[data-preset][aria-pressed=true]')].map(b => b.dataset.preset),
        bots: document.querySelector('#include-bots').checked,
        granularity: document.querySelector('#granularity').value,
        tab: document.querySelector('[role=tab][aria-selected=true]').dataset.dim,
        series: [...document.querySelectorAll('#series-picker input:checked')].map(i => i.value),
        range: document.querySelector('#range-label').textContent,
        tiles: [...document.querySelectorAll('#kpis .value')].map(v => v.dataset.value),
        rows: [...document.querySelectorAll('#series-table tbody tr, #breakdown-table tbody tr')].map(r => r.textContent),
    })""")


def test_a_bookmarked_url_restores_the_same_view_after_signing_in(new_page, stack):
    key = stack.keys["acme"]
    page = new_page()
    sign_in(page, stack, key, f"/app/campaigns/{CAMPAIGN}")
    # A week that ended a week ago: seven days, so drawn by the hour.
    today = dt.datetime.now(dt.timezone.utc).date()
    page.get_by_label("First day").fill((today - dt.timedelta(days=13)).isoformat())
    page.get_by_label("Last day").fill((today - dt.timedelta(days=7)).isoformat())
    page.get_by_role("button", name="Apply").click()
    ready(page)
    page.locator("#include-bots").check()
    ready(page)
    page.locator("[role=tab][data-dim=country]").click()
    ready(page)
    page.locator("#series-picker input[value=completes]").check()
    ready(page)
    bookmark = page.url
    before = state(page)
    assert before["pressed"] == [] and before["bots"] and before["tab"] == "country"
    assert before["series"] == ["impressions", "completes"] and before["granularity"] == "hour"
    assert key not in bookmark and key[13:] not in bookmark

    # Someone else's browser: no key there; signing in lands on the same view.
    other = new_page()
    other.goto(bookmark)
    ready(other)
    expect(other.get_by_role("heading", name="Sign in")).to_be_visible()
    other.get_by_label("API key").fill(key)
    other.get_by_role("button", name="Sign in").click()
    ready(other)
    assert other.url == bookmark
    assert state(other) == before

    # The same tab, after going elsewhere and back through history.
    page.get_by_role("link", name="Campaigns").click()
    ready(page)
    page.go_back()
    ready(page)
    assert page.url == bookmark
    assert state(page) == before


def test_a_campaign_without_traffic_says_so(new_page, stack):
    page = new_page()
    sign_in(page, stack, stack.keys["acme"], f"/app/campaigns/{EMPTY_CAMPAIGN}")
    expect(page.locator("#empty")).to_contain_text("No hits were recorded for this campaign in this range.")
    expect(page.locator("[data-kpi=impressions] .value")).to_have_text("0")
    expect(page.locator("#breakdown")).to_contain_text("Nothing in this range.")
    expect(page.locator("#pacing")).to_contain_text("Pacing needs a flight (start and end) and an impression goal.")


def test_an_api_error_shows_the_problems_detail(new_page, stack):
    key = stack.keys["acme"]
    page = new_page()
    # 90 days by the hour: the API allows 31.
    bookmark = f"/app/campaigns/{CAMPAIGN}?from=2026-01-01&to=2026-04-01&granularity=hour"
    sign_in(page, stack, key, bookmark)
    q = urllib.parse.urlencode({"from": "2026-01-01", "to": "2026-04-01", "granularity": "hour"})
    status, _, body = stack.api(f"/v1/campaigns/{CAMPAIGN}/report?{q}", key)
    assert status == 400
    detail = json.loads(body)["detail"]
    expect(page.locator("#series [role=alert]")).to_have_text(detail)
    # A range that ends before it starts: nothing can be shown but why.
    page.goto(f"{stack.base}/app/campaigns/{CAMPAIGN}?from=2026-03-01&to=2026-02-01")
    ready(page)
    q = urllib.parse.urlencode({"from": "2026-03-01", "to": "2026-02-01", "granularity": "total"})
    status, _, body = stack.api(f"/v1/campaigns/{CAMPAIGN}/report?{q}", key)
    assert status == 400
    expect(page.locator("#view [role=alert]")).to_have_text(json.loads(body)["detail"])
    expect(page.locator("#kpis")).to_have_count(0)


def test_with_redis_down_the_page_says_degraded_and_shows_the_same_numbers(new_page, stack):
    key = stack.keys["acme"]
    up = new_page()
    sign_in(up, stack, key, f"/app/campaigns/{CAMPAIGN}")
    expect(up.locator("#banner")).to_be_empty()
    numbers = up.eval_on_selector_all("#kpis .value", "vs => vs.map(v => v.dataset.value)")

    # Another replica whose Redis never answers (nothing listens on port 1).
    down = stack.serve("redis://127.0.0.1:1")
    page = new_page()
    page.goto(f"{down}/app/campaigns/{CAMPAIGN}?{urllib.parse.urlsplit(up.url).query}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    ready(page)
    expect(page.locator("#banner")).to_have_text(
        "Redis is down: reports come straight from PostgreSQL, uncached. The numbers are the same; pages may be slower.")
    assert page.eval_on_selector_all("#kpis .value", "vs => vs.map(v => v.dataset.value)") == numbers

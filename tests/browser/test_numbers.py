"""The numbers on the campaign page, read from the DOM, equal the API's JSON
for the same range; the downloaded CSVs are the API's CSV, byte for byte."""

import datetime as dt
import pathlib
import re
import urllib.parse

import pytest
from playwright.sync_api import expect

from conftest import ready, sign_in
from stack import CAMPAIGN

DIMS = ["creative", "episode", "show", "placement", "country", "region", "app", "device"]
# The breakdowns with reach: the dimensions the loader sketches.
REACH_DIMS = {"creative", "episode", "show", "country", "app", "device"}
SERIES = ["impressions", "starts", "first_quartiles", "midpoints", "third_quartiles", "completes", "clicks"]
FUNNEL = SERIES[:6]


def view(page):
    """The report parameters the page's URL names."""
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).query))
    params = {"from": q["from"], "to": q["to"]}
    if q.get("bots") == "1":
        params["include_bots"] = "true"
    return params, q["granularity"]


def number(s):
    return None if s == "" else float(s)


def same(dom, api, what):
    assert number(dom) == (None if api is None else float(api)), f"{what}: page {dom!r}, API {api!r}"


def ratio(n, d):
    return None if n is None or not d else n / d


def expected_tiles(total, pacing):
    return {
        "impressions": total["impressions"],
        "reach": total["reach"],
        "frequency": total["frequency"],
        "unique_listeners": total["unique_listeners"],
        "completion_rate": total["completion_rate"],
        "starts": total["starts"],
        "clicks": total["clicks"],
        "invalid_share": ratio(total["invalid_hits"], total["raw_hits"]),
        "bot_share": ratio(total["bot_hits"], total["raw_hits"]),
        "delivery": ratio(pacing["delivered"], pacing["impression_goal"]),
    }


def cells(page, rows_selector, key_attr):
    """{row key: {metric: data-value}} of a table's rows."""
    return page.eval_on_selector_all(rows_selector, """(rows, key) => rows.map(tr => [tr.dataset[key],
        Object.fromEntries([...tr.querySelectorAll('td[data-metric]')].map(td => [td.dataset.metric, td.dataset.value]))])""", key_attr)


def check_view(page, stack, key):
    params, granularity = view(page)
    total = stack.report(CAMPAIGN, key, granularity="total", **params)["totals"]
    pacing = stack.json(f"/v1/campaigns/{CAMPAIGN}/pacing", key)
    assert total["raw_hits"] > 0, "the range has traffic"

    tiles = dict(page.eval_on_selector_all("#kpis [data-kpi]", "ts => ts.map(t => [t.dataset.kpi, t.querySelector('.value').dataset.value])"))
    want = expected_tiles(total, pacing)
    assert set(tiles) == set(want)
    for k, v in want.items():
        same(tiles[k], v, f"tile {k}")
    expect(page.locator("[data-kpi=impressions] .value")).to_have_text(f"{total['impressions']:,}")
    assert total["reach"] > 0, "the range has listeners"
    expect(page.locator("[data-kpi=reach] .value")).to_have_text(f"{total['reach']:,}")
    expect(page.locator("[data-kpi=frequency] .value")).to_have_text(f"{total['frequency']:.2f}")
    expect(page.locator("[data-kpi=reach] .hint")).to_have_text(
        "upper bound: listener ids change between periods in this range" if total["reach_upper_bound"]
        else "distinct listeners over the range")

    for step in FUNNEL:
        same(page.locator(f"#funnel [data-step={step}] td").first.get_attribute("data-value"), total[step], f"funnel {step}")

    series = stack.report(CAMPAIGN, key, granularity=granularity, **params)
    assert series["next_page_token"] is None
    dom = cells(page, "#series-table tbody tr", "bucket")
    assert [b for b, _ in dom] == [r["bucket"] for r in series["rows"]]
    assert len(dom) > 20, "enough points to mean something"
    metrics = SERIES + (["bot_hits", "invalid_hits"] if "include_bots" in params else [])
    for (bucket, values), row in zip(dom, series["rows"]):
        assert set(values) == set(metrics), values
        for m in metrics:
            same(values[m], row[m], f"{bucket} {m}")

    for dim in DIMS:
        page.locator(f"[role=tab][data-dim={dim}]").click()
        expect(page).to_have_url(re.compile(f"by={dim}" if dim != "creative" else r"^((?!by=).)*$"))
        ready(page)
        expect(page.locator(f"[role=tab][data-dim={dim}]")).to_have_attribute("aria-selected", "true")
        api = stack.report(CAMPAIGN, key, granularity="total", group_by=dim, **params)
        rows = {("" if r[dim] is None else r[dim]): r for r in api["rows"]}
        dom = cells(page, "#breakdown-table tbody tr", "key")
        assert sorted(k for k, _ in dom) == sorted(rows), dim
        # Sorted by impressions, most first.
        impressions = [number(v["impressions"]) for _, v in dom]
        assert impressions == sorted(impressions, reverse=True), dim
        assert all(("reach" in v) == (dim in REACH_DIMS) for _, v in dom), dim
        assert all(("unique_listeners" in v) == (dim == "creative") for _, v in dom), dim
        for key_value, values in dom:
            r = rows[key_value]
            for m, v in values.items():
                want = ratio(r["impressions"], api["totals"]["impressions"]) if m == "share" else r[m]
                same(v, want, f"{dim}={key_value} {m}")
    return params, granularity


@pytest.mark.parametrize("preset,granularity", [("30d", "day"), ("7d", "hour")])
def test_tiles_series_funnel_and_breakdowns_equal_the_api_json(new_page, stack, preset, granularity):
    key = stack.keys["acme"]
    page = new_page()
    sign_in(page, stack, key, f"/app/campaigns/{CAMPAIGN}")
    page.locator(f"[data-preset='{preset}']").click()
    ready(page)
    expect(page.locator(f"[data-preset='{preset}']")).to_have_attribute("aria-pressed", "true")
    assert view(page)[1] == granularity
    check_view(page, stack, key)
    # With bots and invalid hits: their series and columns too.
    page.locator("#include-bots").check()
    ready(page)
    assert "bots=1" in page.url
    check_view(page, stack, key)


def test_pacing_shows_the_api_pacing_and_a_delivery_that_adds_up_to_it(new_page, stack):
    key = stack.keys["acme"]
    page = new_page()
    sign_in(page, stack, key, f"/app/campaigns/{CAMPAIGN}")
    pacing = stack.json(f"/v1/campaigns/{CAMPAIGN}/pacing", key)
    facts = dict(page.eval_on_selector_all("#pacing [data-fact]", "ds => ds.map(d => [d.dataset.fact, d.dataset.value])"))
    same(facts["goal"], pacing["impression_goal"], "goal")
    same(facts["delivered"], pacing["delivered"], "delivered")
    # These move with the clock between the page's request and this one.
    assert abs(number(facts["elapsed"]) - pacing["flight_elapsed"]) < 1e-3
    assert abs(number(facts["expected"]) - pacing["expected_by_now"]) <= 2
    assert abs(number(facts["projected"]) - pacing["delivered"] / pacing["flight_elapsed"]) <= 2
    cumulative = [number(v) for v in page.eval_on_selector_all("#pacing-table tbody tr td:first-of-type", "tds => tds.map(td => td.dataset.value)")]
    delivered = [v for v in cumulative if v is not None]
    assert delivered[-1] == pacing["delivered"] > 0
    assert delivered == sorted(delivered)
    tomorrow = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)).isoformat()
    daily = stack.report(CAMPAIGN, key, granularity="day", **{"from": pacing["flight_start"], "to": tomorrow})
    assert sum(r["impressions"] for r in daily["rows"]) == pacing["delivered"]


@pytest.mark.parametrize("bots", [False, True])
def test_downloaded_csv_is_the_api_csv_byte_for_byte(new_page, stack, tmp_path, bots):
    key = stack.keys["acme"]
    page = new_page()
    sign_in(page, stack, key, f"/app/campaigns/{CAMPAIGN}?by=country" + ("&bots=1" if bots else ""))
    params, granularity = view(page)
    for what, extra in [("series", {"granularity": granularity}), ("breakdown", {"granularity": "total", "group_by": "country"})]:
        with page.expect_download() as d:
            page.locator(f"[data-csv={what}]").click()
        path = pathlib.Path(tmp_path) / f"{what}.csv"
        d.value.save_as(path)
        got = path.read_bytes()
        want = stack.report_csv(CAMPAIGN, key, **extra, **params)
        assert got == want, f"{what}: {len(got)} bytes downloaded, the API sent {len(want)}"
        assert got.count(b"\r\n") > 2
        assert (b"bot_impressions" in got.splitlines()[0]) == bots
        assert d.value.suggested_filename.startswith(f"{CAMPAIGN}_{params['from']}_{params['to']}")

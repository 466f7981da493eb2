"""The web benchmark: the campaign page in Debian's Chromium, on the same
stack as the browser tests (stack.py) with 90 days of traffic.

Measures, over ROUNDS fresh browser contexts (empty cache, the key already
in sessionStorage as after sign-in), medians of:
- bytes transferred for the campaign page's first load (the document and
  every resource, headers included, gzip as Chromium asks for it), from the
  Resource Timing API;
- time to the chart drawn: the page's `earshot:chart:series` mark, from
  navigation start;
- switching the range (the 7-day preset, then back to 30 days): from the
  click's `earshot:range-start` mark to the new chart's mark.
Goals (issue 29): first load <= 150 KB and <= 1 s to the chart; a range
switch <= 300 ms. Run through `scripts/bench web`, which builds release
binaries and sets EARSHOT_BIN, EARSHOT_TRAFFIC_BIN and EARSHOT_CHROMIUM.
"""

import argparse
import datetime as dt
import os
import statistics
import sys

from playwright.sync_api import sync_playwright

from stack import CAMPAIGN, Stack, launch_chromium

GOAL_FIRST_LOAD_BYTES = 150 * 1024
GOAL_CHART_MS = 1000.0
GOAL_SWITCH_MS = 300.0

CHART_MARK = "earshot:chart:series"
TRANSFERRED_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  return performance.getEntriesByType('resource').reduce((n, r) => n + r.transferSize, nav.transferSize);
}"""
# The newest chart mark after the newest range-start mark, in ms; null until drawn.
SWITCH_JS = f"""() => {{
  const start = performance.getEntriesByName('earshot:range-start').at(-1);
  const drawn = performance.getEntriesByName('{CHART_MARK}').filter((m) => start && m.startTime > start.startTime);
  return drawn.length ? drawn[0].startTime - start.startTime : null;
}}"""


def ready(page):
    page.wait_for_selector("main[data-state=ready]", timeout=30_000)


def one_round(browser, stack, url):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
    try:
        ctx.add_init_script(f"sessionStorage.setItem('earshot.key', {stack.keys['acme']!r})")
        page = ctx.new_page()
        page.goto(url)
        ready(page)
        page.wait_for_function(f"() => performance.getEntriesByName('{CHART_MARK}').length > 0")
        chart_ms = page.evaluate(f"() => performance.getEntriesByName('{CHART_MARK}')[0].startTime")
        transferred = page.evaluate(TRANSFERRED_JS)
        switches = []
        for preset in ("7d", "30d"):
            page.click(f'[data-preset="{preset}"]')
            ready(page)
            switches.append(page.wait_for_function(SWITCH_JS).json_value())
        return transferred, chart_ms, switches
    finally:
        ctx.close()


def verdict(figure, goal):
    return f"{figure / goal:.2f}x of goal, {'met' if figure <= goal else 'MISSED'}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hits", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    stack = Stack(os.environ["EARSHOT_BIN"], os.environ["EARSHOT_TRAFFIC_BIN"], args.hits, args.days,
                  log=lambda m: print(m, file=sys.stderr))
    try:
        stack.start()
        today = dt.datetime.now(dt.timezone.utc).date()
        frm = today - dt.timedelta(days=args.days - 1)
        url = f"{stack.base}/app/campaigns/{CAMPAIGN}?from={frm}&to={today + dt.timedelta(days=1)}&granularity=day"
        with sync_playwright() as p:
            browser = launch_chromium(p)
            one_round(browser, stack, url)  # warms the server's caches and the page's code cache
            rounds = [one_round(browser, stack, url) for _ in range(args.rounds)]
            browser.close()
    finally:
        stack.stop()

    transferred = statistics.median(r[0] for r in rounds)
    chart = statistics.median(r[1] for r in rounds)
    switch = statistics.median(s for r in rounds for s in r[2])
    print(f"campaign page, {args.hits} hits over {args.days} days, medians of {args.rounds} rounds")
    print(f"  first load transferred: {transferred / 1024:.1f} KB (goal <= 150 KB: {verdict(transferred, GOAL_FIRST_LOAD_BYTES)})")
    print(f"  first load to chart drawn: {chart:.0f} ms (goal <= 1000 ms: {verdict(chart, GOAL_CHART_MS)})")
    print(f"  range switch to chart drawn: {switch:.0f} ms (goal <= 300 ms: {verdict(switch, GOAL_SWITCH_MS)})")


if __name__ == "__main__":
    main()

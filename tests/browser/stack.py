"""A real earshot for the browser tests and the web benchmark.

A fresh database on the PostgreSQL at $DATABASE_URL, migrated by `earshot
migrate`; two advertisers with campaigns, creatives and keys made with
`earshot admin`; traffic from the traffic generator recorded through the
edge's own recorder over DAYS days (`earshot-traffic --record-dir`) and
loaded by the real loader (`earshot load --once --source dir:`); then
`earshot serve` on a free loopback port with Redis at $REDIS_URL. Stopping
it stops the server, drops the database and removes the files.
"""

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

SIGNING_KEYS = "k1:browser-tests-signing-secret-0123"
# The campaign the dashboard is tested and measured on, its creatives, and
# another advertiser's campaign that must stay invisible to the first.
CAMPAIGN = "demo-spring-sale"
CREATIVES = ["cr_30s", "cr_60s"]
OTHER_CAMPAIGN = "globex-launch"
EMPTY_CAMPAIGN = "acme-autumn"


# Debian's Chromium, quiet: nothing of its own on the network.
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_chromium(playwright):
    """The distribution's Chromium (Playwright's own download is not
    reachable), by the path in $EARSHOT_CHROMIUM."""
    args = list(CHROMIUM_ARGS)
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
    return playwright.chromium.launch(executable_path=os.environ.get("EARSHOT_CHROMIUM", "/usr/bin/chromium"), args=args)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, earshot, traffic, hits, days, database_url=None, redis_url=None, log=print):
        self.earshot = earshot
        self.traffic = traffic
        self.hits = hits
        self.days = days
        self.admin_url = database_url or os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        self.redis_url = redis_url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
        self.db = "earshot_browser_" + uuid.uuid4().hex[:12]
        base, _, _ = self.admin_url.rpartition("/")
        self.database_url = f"{base}/{self.db}"
        self.work = tempfile.mkdtemp(prefix="earshot-browser-")
        self.servers = []
        self.log = log
        self.keys = {}

    # -- processes -----------------------------------------------------------
    def env(self, **extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("EARSHOT_")}
        env.update(DATABASE_URL=self.database_url, RUST_LOG="warn", EARSHOT_SIGNING_KEYS=SIGNING_KEYS)
        env.update(extra)
        return env

    def run(self, *args, **env):
        out = subprocess.run(args, env=self.env(**env), capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} exited {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def admin(self, *args):
        """`earshot admin ...`: the last line of stdout is the new id or key."""
        return self.run(self.earshot, "admin", *args).strip().splitlines()[-1]

    def psql(self, sql):
        subprocess.run(["psql", self.admin_url, "-qc", sql], check=True, capture_output=True)

    # -- the stack -----------------------------------------------------------
    def start(self):
        self.psql(f"CREATE DATABASE {self.db}")
        self.run(self.earshot, "migrate")
        today = dt.datetime.now(dt.timezone.utc).date()
        start = today - dt.timedelta(days=self.days - 1)
        end = today + dt.timedelta(days=30)
        acme = self.admin("advertiser", "create", "Acme Audio")
        globex = self.admin("advertiser", "create", "Globex Podcasts")
        self.admin("campaign", "create", "--advertiser", acme, "--name", "Spring sale", "--goal", str(self.hits // 5),
                   "--start", start.isoformat(), "--end", end.isoformat(), CAMPAIGN)
        for cr in CREATIVES:
            self.admin("creative", "create", "--campaign", CAMPAIGN, cr)
        self.admin("campaign", "create", "--advertiser", acme, "--name", "Autumn (no traffic yet)", EMPTY_CAMPAIGN)
        self.admin("campaign", "create", "--advertiser", globex, "--name", "Globex launch", OTHER_CAMPAIGN)
        self.admin("creative", "create", "--campaign", OTHER_CAMPAIGN, "cr_a")
        self.advertisers = {"acme": acme, "globex": globex}
        self.keys = {
            "admin": self.admin("key", "create", "--admin", "--name", "browser admin"),
            "acme": self.admin("key", "create", "--advertiser", acme, "--name", "acme dashboard"),
            "globex": self.admin("key", "create", "--advertiser", globex, "--name", "globex dashboard"),
        }
        events = os.path.join(self.work, "events")
        began = time.monotonic()
        self.run(self.traffic, "--record-dir", events, "--days", str(self.days), "--total", str(self.hits),
                 "--campaign", f"{CAMPAIGN}:{','.join(CREATIVES)}@3", "--campaign", f"{OTHER_CAMPAIGN}:cr_a@1",
                 "--signing-keys", SIGNING_KEYS, "--expect-out", os.path.join(self.work, "expected.json"))
        summary = self.run(self.earshot, "load", "--once", "--source", f"dir:{events}")
        line = next(l for l in summary.splitlines() if l.startswith("objects_loaded="))
        loaded = dict(kv.split("=") for kv in line.split())
        if int(loaded["events_new"]) != self.hits:
            raise RuntimeError(f"the loader stored {loaded['events_new']} new events of {self.hits}: {line}")
        self.log(f"recorded and loaded {self.hits} hits over {self.days} days in {time.monotonic() - began:.1f} s")
        self.base = self.serve(self.redis_url)
        return self

    def serve(self, redis_url):
        """Starts another `earshot serve` on this database; its base URL."""
        port = free_port()
        log = open(os.path.join(self.work, f"serve-{port}.log"), "w")
        proc = subprocess.Popen([self.earshot, "serve"], stdout=log, stderr=subprocess.STDOUT, env=self.env(
            EARSHOT_API_ADDR=f"127.0.0.1:{port}", REDIS_URL=redis_url, RUST_LOG="info",
            EARSHOT_RATE_LIMIT_PER_MINUTE="1000000", EARSHOT_PIXEL_BASE_URL="https://px.example.test/v1/t"))
        self.servers.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"earshot serve exited {proc.returncode}: {open(log.name).read()}")
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).read()
                return base
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"earshot serve did not answer on {base}")

    def stop(self):
        for p in self.servers:
            p.terminate()
        for p in self.servers:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        try:
            self.psql(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    def server_log(self):
        out = []
        for name in sorted(os.listdir(self.work)):
            if name.startswith("serve-"):
                out.append(open(os.path.join(self.work, name)).read()[-4000:])
        return "\n".join(out)

    # -- the API, as the tests read it ----------------------------------------
    def api(self, path, key, accept="application/json", method="GET", body=None, base=None):
        """(status, headers, body bytes) of an API call with `key`."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request((base or self.base) + path, data=data, method=method, headers={
            "Authorization": f"Bearer {key}", "Accept": accept, **({"Content-Type": "application/json"} if data else {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path, key):
        status, _, body = self.api(path, key)
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {body[:500]!r}")
        return json.loads(body)

    def report(self, campaign, key, **params):
        q = urllib.parse.urlencode(params)
        return self.json(f"/v1/campaigns/{campaign}/report?{q}", key)

    def report_csv(self, campaign, key, **params):
        q = urllib.parse.urlencode({**params, "format": "csv"})
        status, _, body = self.api(f"/v1/campaigns/{campaign}/report?{q}", key, accept="text/csv")
        if status != 200:
            raise AssertionError(f"CSV {q}: {status} {body[:500]!r}")
        return body

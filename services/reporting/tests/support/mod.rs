//! spawn_app: the real API on port 0 over a fresh, migrated database, plus
//! synthetic data loaded through the real loader.
#![allow(dead_code)]

use earshot_domain::{EventKind, ListenerId, ListenerPeriod, Placement, TrackingEvent, Verdict};
use earshot_platform::testing::TestDb;
use earshot_platform::DatabaseSettings;
use earshot_reporting::ApiSettings;
use earshot_testkit::loader::{dir_object, load_dir, load_options, loader};
use earshot_testkit::{event, ndjson, temp_dir};
use secrecy::SecretString;
use serde_json::Value;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

pub struct TestApp {
    pub base: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    pub admin_key: String,
}

pub struct AppOptions {
    pub redis_url: Option<String>,
    pub rate_limit_per_minute: u32,
    pub signing_keys: String,
    /// `EARSHOT_API_STATEMENT_TIMEOUT_MS`.
    pub statement_timeout_ms: u64,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            redis_url: std::env::var("REDIS_URL")
                .ok()
                .or_else(|| Some("redis://127.0.0.1:6379".into())),
            rate_limit_per_minute: 100_000,
            signing_keys: "k1:k1-secret-0123456789".into(),
            statement_timeout_ms: earshot_reporting::settings::DEFAULT_STATEMENT_TIMEOUT_MS,
        }
    }
}

/// Builds and starts one API replica on port 0 over the database at
/// `database_url`, connected as `earshot serve` connects; its base URL.
async fn start_replica(opts: AppOptions, database_url: &str) -> String {
    let settings = ApiSettings {
        addr: "127.0.0.1:0".into(),
        redis_url: opts.redis_url.map(SecretString::from),
        rate_limit_per_minute: opts.rate_limit_per_minute,
        signing_keys: SecretString::from(opts.signing_keys),
        pixel_base_url: "https://px.example/v1/t".into(),
        statement_timeout_ms: opts.statement_timeout_ms,
        ..ApiSettings::default()
    };
    let database = DatabaseSettings {
        url: SecretString::from(database_url),
        ..DatabaseSettings::default()
    };
    let pool = earshot_platform::db::connect_api(&database, settings.statement_timeout())
        .await
        .expect("the API connects");
    let app = earshot_reporting::Application::build(&settings, pool)
        .await
        .expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port);
    tokio::spawn(app.server);
    base
}

pub async fn spawn_app(opts: AppOptions) -> TestApp {
    let db = TestDb::new().await;
    let base = start_replica(opts, &db.url).await;
    let admin = earshot_reporting::catalog::create_key(
        &db.pool,
        earshot_reporting::auth::Scope::Admin,
        "test-admin",
    )
    .await
    .unwrap();
    TestApp {
        base,
        db,
        client: reqwest::Client::new(),
        admin_key: admin.key,
    }
}

impl TestApp {
    /// Another replica of the API over the same database (and the same
    /// Redis, per `opts`), as a second pod would be; returns its base URL.
    pub async fn replica(&self, opts: AppOptions) -> String {
        start_replica(opts, &self.db.url).await
    }

    /// Another replica over the same database, connected with
    /// `database_url` (another role); its base URL.
    pub async fn replica_as(&self, opts: AppOptions, database_url: &str) -> String {
        start_replica(opts, database_url).await
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let mut r = self.client.get(format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send().await.unwrap()
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    pub async fn json(&self, path: &str, key: &str) -> Value {
        let r = self.get(path, Some(key)).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// An advertiser with campaigns and a key of its own: (advertiser id, key).
    pub async fn advertiser(&self, name: &str, campaigns: &[&str]) -> (Uuid, String) {
        let pool = &self.db.pool;
        let a = earshot_reporting::catalog::create_advertiser(pool, name)
            .await
            .unwrap();
        for c in campaigns {
            earshot_reporting::catalog::create_campaign(
                pool,
                &earshot_reporting::catalog::NewCampaign {
                    id: c.to_string(),
                    advertiser_id: a.id,
                    name: None,
                    flight_start: None,
                    flight_end: None,
                    impression_goal: None,
                },
            )
            .await
            .unwrap();
        }
        let k = earshot_reporting::catalog::create_key(
            pool,
            earshot_reporting::auth::Scope::Advertiser(a.id),
            name,
        )
        .await
        .unwrap();
        (a.id, k.key)
    }
}

/// Deterministic synthetic traffic for `campaign`: listeners keep their
/// country (and region: two of the US's, one of Germany's, for some of
/// theirs; none elsewhere), app and device; the funnel drops off; some
/// repeats, bots and invalid hits. Spread over `days` days from `start`.
pub fn synthetic_events(
    campaign: &str,
    start: OffsetDateTime,
    days: i64,
    listeners: u32,
    seed: u64,
) -> Vec<TrackingEvent> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let countries = ["US", "DE", "GB", "FR"];
    let apps = [
        ("Apple Podcasts", "Apple iPhone", "ios"),
        ("Spotify", "Android Phone", "android"),
        ("Overcast", "Apple iPhone", "ios"),
    ];
    // Impression through complete, in the order a listener goes.
    let funnel = &EventKind::ALL[..6];
    let mut out = Vec::new();
    for day in 0..days {
        for l in 0..listeners {
            if rng.u8(..) < 60 {
                continue; // not every listener hears an ad every day
            }
            let (app, device, os) = apps[(l as usize) % apps.len()];
            let country = countries[(l as usize / 3) % countries.len()];
            let region = match country {
                "US" => ["US-CA", "US-NY", ""][(l as usize / 12) % 3],
                "DE" => ["DE-BE", ""][(l as usize / 12) % 2],
                _ => "",
            };
            let creative = format!("cr{}", rng.u8(..3));
            let episode = format!("ep{}", rng.u8(..2));
            let verdict = match rng.u8(..100) {
                0..=4 => Verdict::Bot,
                5..=7 => Verdict::Invalid,
                _ => Verdict::Valid,
            };
            let mut ts = start + Duration::days(day) + Duration::minutes(rng.i64(0..1380));
            let depth = rng.usize(1..=funnel.len());
            for kind in &funnel[..depth] {
                ts += Duration::seconds(rng.i64(1..30));
                let repeats = if rng.u8(..10) == 0 { 2 } else { 1 };
                for _ in 0..repeats {
                    ts += Duration::milliseconds(rng.i64(1..500));
                    let mut e = event()
                        .at(ts)
                        .campaign(campaign)
                        .creative(&creative)
                        .episode(Some(&episode))
                        .show("show1")
                        .placement(
                            [Placement::Pre, Placement::Mid, Placement::Post][rng.usize(..3)],
                        )
                        .kind(*kind)
                        // A listener id per day (the daily period's key
                        // rotates at UTC midnight).
                        .listener_id(
                            ListenerId::parse(&format!("{:016x}{:016x}", day as u64, l as u64))
                                .unwrap(),
                        )
                        .listener_period(ListenerPeriod::Day)
                        .ua(Some(&format!("{app}/1.0")))
                        .app(Some(app))
                        .device(Some(device))
                        .os(Some(os))
                        .country(country)
                        .verdict(verdict);
                    if !region.is_empty() {
                        e = e.region(region);
                    }
                    out.push(e.build());
                }
            }
            if rng.u8(..20) == 0 {
                ts += Duration::seconds(5);
                let ts = earshot_domain::wire::to_wire_precision(ts);
                let mut click = out.last().unwrap().clone();
                click.id = earshot_testkit::v7_at(ts);
                click.ts = ts;
                click.event = Some(EventKind::Click);
                out.push(click);
            }
        }
    }
    out
}

/// Loads the events as one object with the real loader, without the
/// upkeep a run does first (partitions ahead, folding days into the day
/// blocks), so a test can place the blocks' mark itself.
pub async fn load_without_upkeep(db: &TestDb, events: &[TrackingEvent]) {
    let dir = temp_dir("api");
    std::fs::write(dir.join("all.ndjson"), ndjson(events)).unwrap();
    let loader = loader(&db.pool, &dir, load_options()).await;
    let stats = loader
        .load_one(&dir_object(&dir, "all.ndjson"))
        .await
        .unwrap();
    assert_eq!(stats.new_events as usize, events.len());
}

/// Writes the events as NDJSON objects and loads them with the real loader.
pub async fn load(db: &TestDb, events: &[TrackingEvent]) {
    let dir = temp_dir("api");
    for (i, chunk) in events.chunks(700).enumerate() {
        std::fs::write(dir.join(format!("part-{i:04}.ndjson")), ndjson(chunk)).unwrap();
    }
    load_dir(&db.pool, &dir).await;
}

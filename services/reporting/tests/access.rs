//! Keys, scopes and tenant isolation on every endpoint.

mod support;

use reqwest::Method;
use serde_json::json;
use support::*;

#[tokio::test]
async fn an_advertiser_sees_only_its_campaigns_and_others_read_as_missing() {
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key_a) = app.advertiser("Acme", &["acme-spring", "acme-fall"]).await;
    let (_b, key_b) = app.advertiser("Globex", &["globex-1"]).await;

    let list = app.json("/v1/campaigns", &key_a).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["acme-fall", "acme-spring"]);
    let list_b = app.json("/v1/campaigns", &key_b).await;
    assert_eq!(list_b.as_array().unwrap().len(), 1);

    for suffix in ["", "/report", "/pacing", "/creatives"] {
        let theirs = app
            .get(&format!("/v1/campaigns/globex-1{suffix}"), Some(&key_a))
            .await;
        assert_eq!(theirs.status(), 404, "globex-1{suffix} with Acme's key");
        let theirs: serde_json::Value = theirs.json().await.unwrap();
        let missing: serde_json::Value = app
            .get(&format!("/v1/campaigns/no-such{suffix}"), Some(&key_a))
            .await
            .json()
            .await
            .unwrap();
        // Indistinguishable from a campaign that does not exist, but for the id.
        assert_eq!(theirs["detail"], "no campaign globex-1");
        assert_eq!(missing["detail"], "no campaign no-such");
        assert_eq!(theirs["type"], missing["type"]);
        let mine = app
            .get(&format!("/v1/campaigns/acme-spring{suffix}"), Some(&key_a))
            .await;
        assert_eq!(mine.status(), 200, "acme-spring{suffix}");
    }
    // The admin sees everything.
    assert_eq!(
        app.json("/v1/campaigns", &app.admin_key)
            .await
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn missing_malformed_and_revoked_keys_get_401() {
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["acme-spring"]).await;
    for path in [
        "/v1/campaigns",
        "/v1/campaigns/acme-spring",
        "/v1/campaigns/acme-spring/report",
        "/v1/keys",
    ] {
        let r = app.get(path, None).await;
        assert_eq!(r.status(), 401, "{path} without a key");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_eq!(
            app.get(path, Some("esk_00000000_nottherightlengthatall"))
                .await
                .status(),
            401
        );
        let forged = format!("esk_{}_{}", "deadbeef", "A".repeat(43));
        assert_eq!(
            app.get(path, Some(&forged)).await.status(),
            401,
            "{path} with a forged key"
        );
    }
    assert_eq!(app.get("/v1/campaigns", Some(&key)).await.status(), 200);
    let prefix = &key[4..12];
    let r = app
        .send(
            Method::DELETE,
            &format!("/v1/keys/{prefix}"),
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    // Revocation takes effect on the very next request.
    assert_eq!(app.get("/v1/campaigns", Some(&key)).await.status(), 401);
}

#[tokio::test]
async fn path_ids_that_cannot_name_anything_are_404s_not_database_errors() {
    // A percent-encoded NUL reaches the handler decoded; PostgreSQL refuses
    // NUL in text, so such an id must be turned away before any query.
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["acme-spring"]).await;
    let calls: Vec<(Method, &str, Option<serde_json::Value>)> = vec![
        (Method::DELETE, "/v1/keys/%00", None),
        (Method::DELETE, "/v1/keys/dead%00eef", None),
        (Method::DELETE, "/v1/keys/DEADBEEF", None),
        (Method::GET, "/v1/campaigns/acme%00", None),
        (Method::GET, "/v1/campaigns/acme%00/report", None),
        (Method::GET, "/v1/campaigns/acme%00/pacing", None),
        (
            Method::PATCH,
            "/v1/advertisers/%00",
            Some(json!({"name": "x"})),
        ),
        (
            Method::POST,
            "/v1/campaigns/acme%00/creatives",
            Some(json!({"id": "cr1"})),
        ),
    ];
    for (method, path, body) in calls {
        let r = app
            .send(method.clone(), path, Some(&app.admin_key), body)
            .await;
        assert_eq!(r.status(), 404, "{method} {path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // The advertiser's key still works: nothing was revoked by accident.
    assert_eq!(app.get("/v1/campaigns", Some(&key)).await.status(), 200);
}

#[tokio::test]
async fn admin_routes_refuse_advertiser_keys() {
    let app = spawn_app(AppOptions::default()).await;
    let (a, key) = app.advertiser("Acme", &["acme-spring"]).await;
    let calls: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (
            Method::POST,
            "/v1/advertisers".into(),
            Some(json!({"name": "x"})),
        ),
        (Method::GET, "/v1/advertisers".into(), None),
        (
            Method::PATCH,
            format!("/v1/advertisers/{a}"),
            Some(json!({"name": "y"})),
        ),
        (
            Method::POST,
            "/v1/campaigns".into(),
            Some(json!({"id": "new", "advertiser_id": a})),
        ),
        (
            Method::PATCH,
            "/v1/campaigns/acme-spring".into(),
            Some(json!({"impression_goal": 5})),
        ),
        (
            Method::POST,
            "/v1/campaigns/acme-spring/creatives".into(),
            Some(json!({"id": "cr1"})),
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            Some(json!({"scope": "admin"})),
        ),
        (Method::GET, "/v1/keys".into(), None),
        (Method::GET, "/v1/admin/audit".into(), None),
        (Method::DELETE, format!("/v1/keys/{}", &key[4..12]), None),
        (
            Method::POST,
            "/v1/campaigns/acme-spring/tracking-urls".into(),
            Some(json!({"creative": "cr1"})),
        ),
    ];
    for (m, path, body) in calls {
        let r = app.send(m.clone(), &path, Some(&key), body.clone()).await;
        assert_eq!(r.status(), 403, "{m} {path} with an advertiser key");
        let r = app.send(m.clone(), &path, None, body).await;
        assert_eq!(r.status(), 401, "{m} {path} without a key");
    }
    // Nothing changed: the advertiser key could not even revoke itself.
    assert_eq!(app.get("/v1/campaigns", Some(&key)).await.status(), 200);
    assert_eq!(
        app.json("/v1/campaigns/acme-spring", &key).await["impression_goal"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn admin_can_bootstrap_a_tenant_end_to_end() {
    let app = spawn_app(AppOptions::default()).await;
    let admin = app.admin_key.clone();
    let adv: serde_json::Value = app
        .send(
            Method::POST,
            "/v1/advertisers",
            Some(&admin),
            Some(json!({"name": "Initech"})),
        )
        .await
        .json()
        .await
        .unwrap();
    let adv_id = adv["id"].as_str().unwrap().to_owned();
    let r = app
        .send(
            Method::POST,
            "/v1/campaigns",
            Some(&admin),
            Some(
                json!({"id": "initech-q1", "advertiser_id": adv_id, "impression_goal": 1000,
                        "flight_start": "2026-01-01", "flight_end": "2026-03-31"}),
            ),
        )
        .await;
    assert_eq!(r.status(), 201);
    let dup = app
        .send(
            Method::POST,
            "/v1/campaigns",
            Some(&admin),
            Some(json!({"id": "initech-q1", "advertiser_id": adv_id})),
        )
        .await;
    assert_eq!(dup.status(), 409);
    let key: serde_json::Value = app
        .send(
            Method::POST,
            "/v1/keys",
            Some(&admin),
            Some(json!({"scope": "advertiser", "advertiser_id": adv_id})),
        )
        .await
        .json()
        .await
        .unwrap();
    let k = key["key"].as_str().unwrap();
    assert!(k.starts_with(&format!("esk_{}_", key["prefix"].as_str().unwrap())));
    let listed = app.json("/v1/keys", &admin).await;
    assert!(!listed.to_string().contains(k), "listing never shows a key");
    let mine = app.json("/v1/campaigns/initech-q1", k).await;
    assert_eq!(mine["impression_goal"], 1000);
    let patched = app
        .send(
            Method::PATCH,
            "/v1/campaigns/initech-q1",
            Some(&admin),
            Some(json!({"impression_goal": 2000})),
        )
        .await;
    assert_eq!(patched.status(), 200);
    assert_eq!(
        app.json("/v1/campaigns/initech-q1", k).await["impression_goal"],
        2000
    );
}

#[tokio::test]
async fn bad_input_is_a_problem_naming_the_parameter() {
    let app = spawn_app(AppOptions::default()).await;
    let (a, key) = app.advertiser("Acme", &["acme-spring"]).await;
    let cases = [
        ("from=2026-11-10&to=2026-11-01", "from"),
        ("from=2024-01-01&to=2026-01-01", "to"),
        ("granularity=week", "granularity"),
        ("group_by=creative,galaxy", "group_by"),
        (
            "from=2026-01-01&to=2026-03-01&granularity=hour",
            "granularity",
        ),
        ("from=2026-01-01T10:30:00Z", "from"),
        ("include_bots=perhaps", "include_bots"),
        ("limit=-1", "limit"),
        ("format=pdf", "format"),
        ("page_token=%%%", "page_token"),
    ];
    for (q, param) in cases {
        let r = app
            .get(&format!("/v1/campaigns/acme-spring/report?{q}"), Some(&key))
            .await;
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(p["param"], param, "{q}: {p}");
        assert_eq!(p["status"], 400);
    }
    let admin = app.admin_key.clone();
    let body_cases = [
        (json!({"id": "bad id", "advertiser_id": a}), "id"),
        (
            json!({"id": "ok", "advertiser_id": a, "flight_start": "2026-02-01", "flight_end": "2026-01-01"}),
            "flight_end",
        ),
        (
            json!({"id": "ok2", "advertiser_id": a, "impression_goal": -5}),
            "impression_goal",
        ),
        (
            json!({"id": "ok3", "advertiser_id": uuid::Uuid::nil()}),
            "advertiser_id",
        ),
    ];
    for (body, param) in body_cases {
        let r = app
            .send(
                Method::POST,
                "/v1/campaigns",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status(), 400, "{body}");
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(p["param"], param, "{body}: {p}");
    }
    let r = app
        .client
        .post(format!("{}/v1/campaigns", app.base))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["param"], "body");
    assert_eq!(app.get("/v1/nowhere", Some(&key)).await.status(), 404);
}

#[tokio::test]
async fn tracking_urls_are_signed_with_the_newest_key_and_verify_at_the_edge() {
    let app = spawn_app(AppOptions {
        signing_keys: "old:old-secret-0123456789,new:new-secret-0123456789".into(),
        ..AppOptions::default()
    })
    .await;
    app.advertiser("Acme", &["acme-spring"]).await;
    let r: serde_json::Value = app
        .send(
            Method::POST,
            "/v1/campaigns/acme-spring/tracking-urls",
            Some(&app.admin_key),
            Some(json!({"creative": "cr_30s", "episode": "ep 7".replace(' ', "-"), "placement": "mid"})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["key_id"], "new");
    let urls = r["urls"].as_object().unwrap();
    assert_eq!(urls.len(), 9);
    let keys =
        earshot_domain::SigningKeys::parse("old:old-secret-0123456789,new:new-secret-0123456789")
            .unwrap();
    for (kind, url) in urls {
        let url = url.as_str().unwrap();
        assert!(
            url.starts_with("https://px.example/v1/t?c=acme-spring&cr=cr_30s&ep=ep-7&pos=mid&ev="),
            "{url}"
        );
        let query = url.split_once('?').unwrap().1;
        let p = earshot_domain::PixelParams::parse(query);
        let hit = p.check(&keys, true);
        assert_eq!(hit.invalid, None, "{kind}: {url}");
        assert_eq!(hit.event.unwrap().as_str(), kind);
    }
    assert!(urls["error"].as_str().unwrap().contains("&err=[ERRORCODE]"));
}

#[tokio::test]
async fn a_key_revoked_elsewhere_stops_working_as_soon_as_the_change_is_heard() {
    let app = spawn_app(AppOptions::default()).await;
    let (_a, key) = app.advertiser("Acme", &["acme-spring"]).await;
    // Warm the in-process key cache.
    for _ in 0..3 {
        assert_eq!(app.get("/v1/campaigns", Some(&key)).await.status(), 200);
    }
    // Revoked from another process (e.g. `earshot admin key revoke`): this
    // replica hears it through the PostgreSQL notification.
    earshot_reporting::catalog::revoke_key(&app.db.pool, &key[4..12])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = app.get("/v1/campaigns", Some(&key)).await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the revocation was never heard"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // And it stays revoked.
    for _ in 0..3 {
        assert_eq!(app.get("/v1/campaigns", Some(&key)).await.status(), 401);
    }
}

/// The API's pool and change listener over a fresh database holding one
/// admin key, as `Application::build` wires them, once the listener is up:
/// (database, pool, live caches, the key).
async fn listening_over_one_key() -> (
    earshot_platform::testing::TestDb,
    sqlx::PgPool,
    std::sync::Arc<earshot_reporting::live::Live>,
    earshot_reporting::catalog::CreatedKey,
) {
    let db = earshot_platform::testing::TestDb::new().await;
    let key = earshot_reporting::catalog::create_key(
        &db.pool,
        earshot_reporting::auth::Scope::Admin,
        "raced",
    )
    .await
    .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .unwrap();
    let live = std::sync::Arc::new(earshot_reporting::live::Live::default());
    earshot_reporting::live::spawn_listener(pool.clone(), live.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !live.is_listening() || listener_pid(&db.pool).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (db, pool, live, key)
}

/// A revocation whose notification never comes (an operator's `UPDATE`
/// by hand, not `earshot admin key revoke`) is still refused once the
/// key's time in memory ([`KEY_TTL`]) is over: then it is looked up again.
#[tokio::test]
async fn a_key_revoked_without_a_notification_is_refused_after_its_ttl() {
    use earshot_reporting::auth::api_key;
    use earshot_reporting::auth::key_cache::{Check, KEY_TTL};
    use std::time::{Duration, Instant};

    let (db, pool, live, key) = listening_over_one_key().await;
    let keys = live.keys();
    let prefix = api_key::prefix_of(&key.key);
    let hash = api_key::hash(&key.key);
    let scope = earshot_reporting::auth::Scope::Admin;
    // Looked up and kept, as the first request with it does.
    let now = Instant::now();
    assert_eq!(keys.check(prefix, &hash, now), Check::LookUp);
    let generation = keys.generation();
    let found = api_key::live_key(&pool, prefix).await.unwrap();
    keys.remember(prefix, found, generation, now);
    assert_eq!(
        keys.check(prefix, &hash, now),
        Check::Known(key.info.id, scope)
    );
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE prefix = $1")
        .bind(prefix)
        .execute(&db.pool)
        .await
        .unwrap();
    // Nothing was heard: memory still answers, until the TTL is over.
    let almost = now + KEY_TTL - Duration::from_millis(1);
    assert_eq!(
        keys.check(prefix, &hash, almost),
        Check::Known(key.info.id, scope)
    );
    let expired = now + KEY_TTL;
    assert_eq!(keys.check(prefix, &hash, expired), Check::LookUp);
    let generation = keys.generation();
    let again = api_key::live_key(&pool, prefix).await.unwrap();
    assert_eq!(again, None, "the database has it revoked");
    keys.remember(prefix, again, generation, expired);
    assert_ne!(
        keys.check(prefix, &hash, expired),
        Check::Known(key.info.id, scope)
    );
}

/// The listener's session for this database, as PostgreSQL lists it.
async fn listener_pid(pool: &sqlx::PgPool) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
         AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// The race the key cache's generation closes, on a real PostgreSQL: a
/// request looks a key up (live), then, before it keeps the answer, the
/// change listener's session is killed and the key revoked while the
/// listener cannot reconnect, so the revocation's notification is lost.
/// Once the listener is back, the answer read before the revocation must
/// not be kept: the key is looked up again and refused.
#[tokio::test]
async fn a_key_looked_up_across_a_listener_reconnection_is_not_kept() {
    use earshot_reporting::auth::api_key;
    use earshot_reporting::auth::key_cache::Check;
    use sqlx::{AssertSqlSafe, Connection};
    use std::time::{Duration, Instant};

    let (db, pool, live, key) = listening_over_one_key().await;
    // The test's own session: opened now, it outlives the refusal of new
    // connections below.
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    // ALLOW_CONNECTIONS is changed from another database.
    let server_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| earshot_platform::config::DEFAULT_DATABASE_URL.to_owned());
    let mut server = sqlx::PgConnection::connect(&server_url).await.unwrap();
    let wait = |what: &'static str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        move || assert!(Instant::now() < deadline, "{what}")
    };

    // A request's lookup, step by step as `Authenticator` takes it: the
    // cache cannot answer, the generation is read, the database says live.
    let keys = live.keys();
    let prefix = api_key::prefix_of(&key.key);
    let hash = api_key::hash(&key.key);
    assert_eq!(keys.check(prefix, &hash, Instant::now()), Check::LookUp);
    let generation = keys.generation();
    let found = api_key::live_key(&pool, prefix).await.unwrap();
    assert!(found.as_ref().is_some_and(|k| k.matches(&hash)));

    // Before it keeps that answer: no new session may open, the listener's
    // is ended, and the key is revoked while nobody listens.
    let db_name = db.name.clone();
    sqlx::query(AssertSqlSafe(format!(
        "ALTER DATABASE {db_name} WITH ALLOW_CONNECTIONS false"
    )))
    .execute(&mut server)
    .await
    .unwrap();
    let pid = listener_pid(&admin).await.unwrap();
    let generation_before = live.generation();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&admin)
        .await
        .unwrap();
    let waiting = wait("the listener's session did not end");
    while listener_pid(&admin).await.is_some() {
        waiting();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    earshot_reporting::catalog::revoke_key(&admin, prefix)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "ALTER DATABASE {db_name} WITH ALLOW_CONNECTIONS true"
    )))
    .execute(&mut server)
    .await
    .unwrap();

    // The listener reconnects and catches up (its generation moves, then
    // it is listening again).
    let waiting = wait("the listener never came back");
    while !(live.generation() > generation_before && live.is_listening()) {
        waiting();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Now the lookup keeps what it read before the revocation: it must not
    // be served from memory.
    keys.remember(prefix, found, generation, Instant::now());
    assert_eq!(keys.check(prefix, &hash, Instant::now()), Check::LookUp);
    // Looked up again, the key is refused, and that is kept.
    let generation = keys.generation();
    let again = api_key::live_key(&pool, prefix).await.unwrap();
    assert_eq!(again, None);
    keys.remember(prefix, again, generation, Instant::now());
    assert_ne!(
        keys.check(prefix, &hash, Instant::now()),
        Check::Known(key.info.id, earshot_reporting::auth::Scope::Admin)
    );
}

#[tokio::test]
async fn the_admin_audit_names_a_missing_number_and_checks_its_parameters() {
    let app = spawn_app(AppOptions::default()).await;
    // Edge numbers 1-5 and 7-10 stored half an hour ago, a heartbeat at 10:
    // number 6 is missing (lost with no in-flight window).
    let at = time::OffsetDateTime::now_utc() - time::Duration::minutes(30);
    let edge = "0123456789abcdef0123456789abcdef";
    for (lo, hi) in [(1i64, 5i64), (7, 10)] {
        sqlx::query(
            "INSERT INTO edge_seq_ranges (edge, hour, lo, hi, lo_ts, hi_ts, state, object_id)
             VALUES ($1, date_trunc('hour', $2::timestamptz), $3, $4, $2, $2, 'stored', 1)",
        )
        .bind(edge)
        .bind(at)
        .bind(lo)
        .bind(hi)
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO edge_heartbeats (edge, seq, ts, object_id) VALUES ($1, 10, $2, 1)")
        .bind(edge)
        .bind(at)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let audit = app
        .json(
            "/v1/admin/audit?hours=2&in_flight_minutes=0",
            &app.admin_key,
        )
        .await;
    assert_eq!(
        (
            &audit["total"]["numbered"],
            &audit["total"]["stored"],
            &audit["total"]["lost"]
        ),
        (&json!(10), &json!(9), &json!(1))
    );
    assert_eq!(
        (&audit["missing"][0]["lo"], &audit["missing"][0]["hi"]),
        (&json!(6), &json!(6))
    );
    assert_eq!(audit["edges"][0]["tail"], "known");
    // With the default 15-minute window it is lost too: half an hour old.
    let default = app.json("/v1/admin/audit", &app.admin_key).await;
    assert_eq!(default["total"]["lost"], json!(1));
    for bad in ["hours=0", "hours=169", "hours=x", "in_flight_minutes=1441"] {
        let r = app
            .get(&format!("/v1/admin/audit?{bad}"), Some(&app.admin_key))
            .await;
        assert_eq!(r.status(), 400, "{bad}");
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(p["param"], bad.split('=').next().unwrap(), "{bad}");
    }
}

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

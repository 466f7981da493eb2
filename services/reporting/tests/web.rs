//! What the dashboard (`/app`) relies on from the API binary: `/v1/me`, and
//! the pages served beside the API without taking its error shape away.

mod support;

use reqwest::Method;
use support::*;

#[tokio::test]
async fn me_names_the_key_and_the_advertiser_it_speaks_for() {
    let app = spawn_app(AppOptions::default()).await;
    let (acme, key) = app.advertiser("Acme", &["acme-spring"]).await;

    let me = app.json("/v1/me", &key).await;
    assert_eq!(me["key"]["scope"], "advertiser");
    assert_eq!(me["key"]["prefix"], &key[4..12]);
    assert_eq!(me["key"]["name"], "Acme");
    assert_eq!(me["key"]["advertiser_id"], acme.to_string());
    assert_eq!(me["key"]["revoked_at"], serde_json::Value::Null);
    assert_eq!(me["advertiser"]["id"], acme.to_string());
    assert_eq!(me["advertiser"]["name"], "Acme");
    assert!(me["key"].get("key").is_none() && me["key"].get("hash").is_none());

    let admin = app.json("/v1/me", &app.admin_key).await;
    assert_eq!(admin["key"]["scope"], "admin");
    assert_eq!(admin["key"]["name"], "test-admin");
    assert_eq!(admin["advertiser"], serde_json::Value::Null);

    // Wrong, missing and revoked keys: the API's 401 problem.
    assert_eq!(app.get("/v1/me", None).await.status(), 401);
    let wrong = format!("esk_{}_{}", &key[4..12], "A".repeat(43));
    assert_eq!(app.get("/v1/me", Some(&wrong)).await.status(), 401);
    let revoked = app
        .send(
            Method::DELETE,
            &format!("/v1/keys/{}", &key[4..12]),
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(revoked.status(), 200);
    let r = app.get("/v1/me", Some(&key)).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn the_dashboard_and_the_api_reference_are_served_beside_the_api() {
    let app = spawn_app(AppOptions::default()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = client.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(root.status(), 302);
    assert_eq!(root.headers()["location"], "/app");
    for page in ["/app", "/app/campaigns/acme-spring", "/docs"] {
        let r = app.get(page, None).await;
        assert_eq!(r.status(), 200, "{page}");
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(
            r.headers()["content-security-policy"],
            earshot_web::CONTENT_SECURITY_POLICY
        );
    }
    // The API's own answers are unchanged around them.
    let missing = app.get("/v1/no-such-endpoint", None).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let spec = app.get("/v1/openapi.json", None).await;
    let spec: serde_json::Value = spec.json().await.unwrap();
    assert!(spec["paths"]["/v1/me"]["get"].is_object());
}

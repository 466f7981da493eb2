#![doc = include_str!("../README.md")]

pub mod auth;
pub mod catalog;
pub mod error;
pub mod live;
pub mod rate_limit;
pub mod redis_store;
pub mod report;
pub mod report_cache;
pub mod routes;
pub mod settings;
pub mod state;

use std::net::TcpListener;
use std::time::Instant;

use actix_web::dev::{Server, Service};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use earshot_domain::SigningKeys;
use futures::FutureExt;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::auth::Authenticator;
use crate::redis_store::RedisStore;
use crate::report_cache::ReportCache;
pub use crate::settings::ApiSettings;
use crate::state::AppState;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An earshot API key: `esk_<prefix>_<secret>`"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "earshot reporting API",
        description = "Podcast ad delivery, counted the way the IAB podcast measurement guidelines count. Errors are RFC 9457 problem details (application/problem+json) naming the bad parameter in `param`."
    ),
    paths(
        routes::me::me,
        routes::campaigns::list,
        routes::campaigns::get_one,
        routes::campaigns::creatives,
        routes::reports::report,
        routes::reports::frequency,
        routes::campaigns::pacing,
        routes::catalog::create_advertiser,
        routes::catalog::list_advertisers,
        routes::catalog::update_advertiser,
        routes::catalog::create_campaign,
        routes::catalog::update_campaign,
        routes::catalog::put_creative,
        routes::api_keys::create_key,
        routes::api_keys::list_keys,
        routes::api_keys::revoke_key,
        routes::audit::audit,
        routes::catalog::tracking_urls,
        routes::ops::healthz,
        routes::ops::readyz,
        routes::ops::metrics,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "campaigns", description = "What an advertiser's key can see"),
        (name = "admin", description = "Admin keys only"),
        (name = "ops", description = "Probes and metrics"),
    )
)]
pub struct ApiDoc;

/// Registers every route (tests build the same app).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(64 * 1024)
            .error_handler(error::json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(error::query_error))
    .app_data(web::PathConfig::default().error_handler(error::path_error))
    .service(routes::ops::healthz)
    .service(routes::ops::readyz)
    .service(routes::ops::metrics)
    .service(routes::ops::openapi)
    .configure(earshot_web::configure)
    .service(routes::me::me)
    .service(routes::campaigns::list)
    .service(routes::catalog::create_campaign)
    .service(routes::reports::report)
    .service(routes::reports::frequency)
    .service(routes::campaigns::pacing)
    .service(routes::campaigns::creatives)
    .service(routes::catalog::put_creative)
    .service(routes::catalog::tracking_urls)
    .service(routes::campaigns::get_one)
    .service(routes::catalog::update_campaign)
    .service(routes::catalog::create_advertiser)
    .service(routes::catalog::list_advertisers)
    .service(routes::catalog::update_advertiser)
    .service(routes::api_keys::create_key)
    .service(routes::api_keys::list_keys)
    .service(routes::api_keys::revoke_key)
    .service(routes::audit::audit)
    .default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(error::ApiError::NotFound(
            "no such endpoint; see /v1/openapi.json".into(),
        ))
    }));
}

/// The running API: its address (port 0 picks one) and its server.
pub struct Application {
    pub port: u16,
    pub server: Server,
}

impl Application {
    pub async fn build(settings: &ApiSettings, pool: PgPool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.addr)
            .with_context(|| format!("EARSHOT_API_ADDR: cannot listen on {}", settings.addr))?;
        let port = listener.local_addr()?.port();
        let redis = match &settings.redis_url {
            Some(url) => RedisStore::new(url.expose_secret())?,
            None => RedisStore::disabled(),
        };
        let signing_keys = SigningKeys::parse(settings.signing_keys.expose_secret())
            .context("EARSHOT_SIGNING_KEYS")?;
        let cache_namespace: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&pool)
            .await
            .context("reading the database name")?;
        let live = std::sync::Arc::new(live::Live::default());
        live::spawn_listener(pool.clone(), live.clone());
        let authenticator = web::Data::new(Authenticator {
            pool: pool.clone(),
            keys: live.keys().clone(),
            limiter: rate_limit::RateLimiter::new(redis.clone()),
            rate_limit_per_minute: settings.rate_limit_per_minute,
        });
        let reports = ReportCache::new(
            pool.clone(),
            live.clone(),
            redis.clone(),
            std::time::Duration::from_secs(settings.cache_ttl_seconds),
            cache_namespace,
        );
        let state = web::Data::new(AppState {
            pool,
            redis,
            signing_keys,
            pixel_base_url: settings.pixel_base_url.clone(),
            metrics: earshot_platform::metrics::prometheus(),
            live,
            reports,
            blocks_mark: Default::default(),
            reach_sketches: Default::default(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(authenticator.clone())
                .wrap_fn(|req, srv| {
                    let started = Instant::now();
                    let method = req.method().to_string();
                    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                    srv.call(req).map(move |res| {
                        let status = match &res {
                            Ok(r) => r.status().as_u16().to_string(),
                            Err(e) => e.as_response_error().status_code().as_u16().to_string(),
                        };
                        metrics::counter!("earshot_api_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
                        metrics::histogram!("earshot_api_request_duration_seconds", "route" => route).record(started.elapsed().as_secs_f64());
                        res
                    })
                })
                .configure(configure)
        })
        .listen(listener)?
        .shutdown_timeout(10)
        .run();
        Ok(Self { port, server })
    }
}

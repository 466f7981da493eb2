//! What an advertiser's key can see: its campaigns, their creatives,
//! reports and pacing. Another advertiser's campaign is a 404, exactly as a
//! missing one.

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;

use crate::admin::{self, Campaign, Creative};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::live::CachedReport;
use crate::report::{self as reports, Format, Report, ReportParams, ReportSpec};
use crate::state::AppState;

/// List the campaigns this key may see.
#[utoipa::path(
    get, path = "/v1/campaigns", tag = "campaigns",
    responses(
        (status = 200, description = "Campaigns, by id", body = Vec<Campaign>),
        (status = 401, description = "Missing or invalid key", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/v1/campaigns")]
pub async fn list(state: web::Data<AppState>, who: Principal) -> Result<HttpResponse, ApiError> {
    let campaigns = admin::list_campaigns(&state.pool, who.scope.advertiser()).await?;
    Ok(HttpResponse::Ok().json(campaigns))
}

/// One campaign.
#[utoipa::path(
    get, path = "/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign id used in pixel URLs")),
    responses(
        (status = 200, body = Campaign),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign for this key", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/v1/campaigns/{id}")]
pub async fn get_one(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let c = admin::get_campaign(&state.pool, &id, who.scope.advertiser()).await?;
    Ok(HttpResponse::Ok().json(c))
}

/// The campaign's creatives.
#[utoipa::path(
    get, path = "/v1/campaigns/{id}/creatives", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign id used in pixel URLs")),
    responses(
        (status = 200, body = Vec<Creative>),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/v1/campaigns/{id}/creatives")]
pub async fn creatives(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let c = admin::get_campaign(&state.pool, &id, who.scope.advertiser()).await?;
    Ok(HttpResponse::Ok().json(admin::list_creatives(&state.pool, &c.id).await?))
}

async fn data_version(state: &AppState, campaign: &str) -> Result<i64, ApiError> {
    if let Some(v) = state.live.version(campaign) {
        return Ok(v);
    }
    let v: Option<i64> =
        sqlx::query_scalar("SELECT version FROM campaign_data_versions WHERE campaign = $1")
            .bind(campaign)
            .fetch_optional(&state.pool)
            .await?;
    let v = v.unwrap_or(0);
    state.live.remember_version(campaign, v);
    Ok(v)
}

/// 404 unless `who` may see the campaign: the same answer as for a
/// campaign that does not exist.
async fn authorize(state: &AppState, who: &Principal, campaign: &str) -> Result<(), ApiError> {
    let owner = match state.live.owner(campaign) {
        Some(o) => Some(o),
        None => {
            let o = admin::campaign_owner(&state.pool, campaign).await?;
            if let Some(o) = o {
                state.live.remember_owner(campaign, o);
            }
            o
        }
    };
    match (owner, who.scope.advertiser()) {
        (Some(_), None) => Ok(()),
        (Some(o), Some(a)) if o == a => Ok(()),
        _ => Err(ApiError::NotFound(format!("no campaign {campaign}"))),
    }
}

/// A campaign's delivery: rows by hour, day or in total, grouped by any of
/// creative, episode, show, placement, country, app, device.
///
/// Counted numbers follow the IAB rules: valid (not bot, not invalid) hits,
/// each (listener, creative, episode, event) counted once per UTC day.
/// Unique listeners are daily (listener ids rotate every UTC day by design)
/// and summed over the days of a row.
#[utoipa::path(
    get, path = "/v1/campaigns/{id}/report", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign id used in pixel URLs"), ReportParams),
    responses(
        (status = 200, description = "The report (JSON), or the same rows as CSV with `Accept: text/csv` or `format=csv`", body = Report,
         headers(("x-cache" = String, description = "hit or miss"))),
        (status = 400, description = "A bad parameter, named in `param`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/v1/campaigns/{id}/report")]
pub async fn report(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
    params: web::Query<ReportParams>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &who, &id).await?;
    let accept_csv = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    let spec = ReportSpec::parse(&params, accept_csv, OffsetDateTime::now_utc())?;
    let content_type = match spec.format {
        Format::Json => "application/json",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let caching = state.cache_ttl_seconds > 0;
    let version = data_version(&state, &id).await?;
    let key = spec.cache_key(&state.cache_namespace, &id, version);
    let ttl = std::time::Duration::from_secs(state.cache_ttl_seconds);
    let gzip_ok = accepts_gzip(&req);
    if caching {
        let hit = match state.live.report(&key, ttl) {
            Some(cached) => Some(cached),
            None => state.redis.get(&key).await.map(|b| {
                let cached = CachedReport::new(actix_web::web::Bytes::from(b));
                state.live.remember_report(&key, cached.clone());
                cached
            }),
        };
        if let Some(cached) = hit {
            metrics::counter!("earshot_api_cache_total", "outcome" => "hit").increment(1);
            let mut resp = HttpResponse::Ok();
            resp.content_type(content_type)
                .insert_header(("x-cache", "hit"))
                .insert_header((header::VARY, "Accept-Encoding"));
            if gzip_ok {
                resp.insert_header((header::CONTENT_ENCODING, "gzip"));
                return Ok(resp.body(cached.gzip));
            }
            return Ok(resp.body(cached.body));
        }
        metrics::counter!("earshot_api_cache_total", "outcome" => "miss").increment(1);
    }
    let rep = reports::run(&state.pool, &state.blocks_mark, &id, &spec).await?;
    let body = actix_web::web::Bytes::from(match spec.format {
        Format::Json => serde_json::to_vec(&rep).map_err(|e| ApiError::Internal(e.into()))?,
        Format::Csv => reports::to_csv(&rep, &spec).into_bytes(),
    });
    if caching {
        state.redis.set(&key, &body, state.cache_ttl_seconds).await;
        state
            .live
            .remember_report(&key, CachedReport::new(body.clone()));
    }
    let mut resp = HttpResponse::Ok();
    resp.content_type(content_type)
        .insert_header(("x-cache", "miss"))
        .insert_header((header::VARY, "Accept-Encoding"));
    if let (Format::Csv, Some(tok)) = (spec.format, &rep.next_page_token) {
        resp.insert_header((header::LINK, format!("<?page_token={tok}>; rel=\"next\"")));
    }
    Ok(resp.body(body))
}

/// Whether `Accept-Encoding` admits gzip (RFC 9110 §12.5.3): gzip listed
/// with a q-value above 0, or else `*` with one.
fn accepts_gzip(req: &HttpRequest) -> bool {
    let mut gzip = None;
    let mut star = None;
    for item in req
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(q);
        } else if coding == "*" {
            star = Some(q);
        }
    }
    gzip.or(star).is_some_and(|q| q > 0.0)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Pacing {
    pub campaign: String,
    pub impression_goal: Option<i64>,
    pub flight_start: Option<time::Date>,
    pub flight_end: Option<time::Date>,
    /// Counted impressions during the flight (all time without a flight).
    pub delivered: i64,
    /// Even pacing: goal × the share of the flight elapsed. Null without a goal and a flight.
    pub expected_by_now: Option<f64>,
    /// delivered / expected_by_now; null when nothing is expected yet.
    pub pace_ratio: Option<f64>,
    /// Share of the flight elapsed (0-1).
    pub flight_elapsed: Option<f64>,
    #[serde(with = "time::serde::rfc3339")]
    pub as_of: OffsetDateTime,
}

/// Delivery against the goal under even pacing across the flight.
#[utoipa::path(
    get, path = "/v1/campaigns/{id}/pacing", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign id used in pixel URLs")),
    responses(
        (status = 200, body = Pacing),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/v1/campaigns/{id}/pacing")]
pub async fn pacing(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let c = admin::get_campaign(&state.pool, &id, who.scope.advertiser()).await?;
    let now = OffsetDateTime::now_utc();
    Ok(HttpResponse::Ok().json(compute_pacing(&state.pool, &c, now).await?))
}

pub async fn compute_pacing(
    pool: &sqlx::PgPool,
    c: &Campaign,
    now: OffsetDateTime,
) -> Result<Pacing, ApiError> {
    let start = c.flight_start.map(|d| d.midnight().assume_utc());
    // The last day is included: the flight ends at the next midnight.
    let end = c
        .flight_end
        .map(|d| d.midnight().assume_utc() + Duration::days(1));
    let delivered: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(counted_hits), 0)::bigint FROM rollup_hourly
         WHERE campaign = $1 AND event = 'impression'
           AND ($2::timestamptz IS NULL OR hour >= $2) AND ($3::timestamptz IS NULL OR hour < $3)",
    )
    .bind(&c.id)
    .bind(start)
    .bind(end)
    .fetch_one(pool)
    .await?;
    let elapsed = match (start, end) {
        (Some(s), Some(e)) if e > s => {
            Some(((now - s).as_seconds_f64() / (e - s).as_seconds_f64()).clamp(0.0, 1.0))
        }
        _ => None,
    };
    let expected = match (c.impression_goal, elapsed) {
        (Some(g), Some(f)) => Some(g as f64 * f),
        _ => None,
    };
    Ok(Pacing {
        campaign: c.id.clone(),
        impression_goal: c.impression_goal,
        flight_start: c.flight_start,
        flight_end: c.flight_end,
        delivered,
        expected_by_now: expected,
        pace_ratio: expected.filter(|e| *e > 0.0).map(|e| delivered as f64 / e),
        flight_elapsed: elapsed,
        as_of: now,
    })
}

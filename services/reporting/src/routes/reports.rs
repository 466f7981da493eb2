//! A campaign's report: who may see it, then the report from the cache or
//! rendered (`report_cache.rs` answers either way, with the same headers).

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::catalog;
use crate::error::ApiError;
use crate::report::frequency::{self as freq, Frequency, FrequencyParams};
use crate::report::{self as reports, Format, Report, ReportParams, ReportSpec};
use crate::report_cache::Rendered;
use crate::state::AppState;

/// 404 unless `who` may see the campaign: the same answer as for a
/// campaign that does not exist.
async fn authorize(state: &AppState, who: &Principal, campaign: &str) -> Result<(), ApiError> {
    let owner = match state.live.owner(campaign) {
        Some(o) => Some(o),
        None => {
            let o = catalog::campaign_owner(&state.pool, campaign).await?;
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
/// creative, episode, show, placement, country, region, app, device.
///
/// Counted numbers follow the IAB rules: valid (not bot, not invalid) hits,
/// each (listener, creative, episode, event) counted once per UTC day.
/// Unique listeners are daily, summed over the days of a row; `reach` is
/// distinct listeners over the row's days (HyperLogLog, about 0.8% error),
/// `frequency` impressions per listener reached (docs/COUNTING.md).
#[utoipa::path(
    get, path = "/v1/campaigns/{id}/report", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign id used in pixel URLs"), ReportParams),
    responses(
        (status = 200, description = "The report (JSON), or the same rows as CSV with `Accept: text/csv` or `format=csv`", body = Report,
         headers(("x-cache" = String, description = "hit or miss"),
                 ("link" = String, description = "The next page, `<?…&page_token=…>; rel=\"next\"`, with every other query parameter as given; absent on the last page"))),
        (status = 400, description = "A bad parameter, named in `param`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The report took longer than the API allows (`EARSHOT_API_STATEMENT_TIMEOUT_MS`), or the database is unavailable; retry after `Retry-After` seconds", body = crate::error::Problem, content_type = "application/problem+json",
         headers(("retry-after" = u64, description = "Seconds to wait before retrying"))),
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
    let rendered = || async {
        let rep = reports::run(
            &state.pool,
            &state.blocks_mark,
            &state.reach_sketches,
            &id,
            &spec,
        )
        .await?;
        let body = match spec.format {
            Format::Json => serde_json::to_vec(&rep).map_err(|e| ApiError::Internal(e.into()))?,
            Format::Csv => reports::to_csv(&rep, &spec).into_bytes(),
        };
        Ok(Rendered {
            body: body.into(),
            next_page_token: rep.next_page_token,
        })
    };
    state.reports.respond(&req, &id, &spec, rendered).await
}

/// How often the campaign reached its listeners over a range: listeners
/// reached 1, 2, 3-5, 6-10 and 11 or more times (counted impressions),
/// estimated from a fixed 1-in-64 sample of listeners, scaled up
/// (docs/COUNTING.md, "Reach and frequency").
#[utoipa::path(
    get, path = "/v1/campaigns/{id}/frequency", tag = "campaigns",
    params(("id" = String, Path, description = "The campaign id used in pixel URLs"), FrequencyParams),
    responses(
        (status = 200, description = "The distribution", body = Frequency),
        (status = 400, description = "A bad parameter, named in `param`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The query took longer than the API allows, or the database is unavailable; retry after `Retry-After` seconds", body = crate::error::Problem, content_type = "application/problem+json",
         headers(("retry-after" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = []))
)]
#[get("/v1/campaigns/{id}/frequency")]
pub async fn frequency(
    state: web::Data<AppState>,
    who: Principal,
    id: web::Path<String>,
    params: web::Query<FrequencyParams>,
) -> Result<HttpResponse, ApiError> {
    authorize(&state, &who, &id).await?;
    let (from, to) = freq::range(&params, OffsetDateTime::now_utc())?;
    let f = freq::run(&state.pool, &id, from, to).await?;
    Ok(HttpResponse::Ok().json(f))
}

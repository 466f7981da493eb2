//! Admin scope: the sequence audit, what the edges numbered against what
//! was stored (docs/COUNTING.md, "How we know nothing was lost"); the same
//! figures as `earshot audit --json`.

use actix_web::{get, web, HttpResponse};
use earshot_platform::audit::{self as ledger, AuditOptions, DEFAULT_IN_FLIGHT};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Principal;
use crate::error::{bad, ApiError};
use crate::state::AppState;

/// Most hours one audit reads: a week.
pub const MAX_AUDIT_HOURS: u32 = 168;
/// Longest in-flight window: a day (Firehose retries S3 delivery for 24 h).
pub const MAX_IN_FLIGHT_MINUTES: u64 = 24 * 60;

/// The audit's query string, parsed by hand so each error names its
/// parameter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// UTC hours audited, up to and including the current one: 1-168 (default 24).
    pub hours: Option<String>,
    /// Missing numbers younger than this many minutes are in flight, older ones lost: 0-1440 (default 15).
    pub in_flight_minutes: Option<String>,
}

fn number<T: std::str::FromStr + PartialOrd>(
    param: &str,
    value: Option<&str>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ApiError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match v.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(bad(
            param,
            format!("{v:?} is not a whole number in the allowed range"),
        )),
    }
}

/// The sequence audit of the last hours: per UTC hour, per edge and in
/// total, numbers stored, duplicates, quarantined, in flight and lost; the
/// missing runs; each edge's tail.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", params(AuditParams),
    responses((status = 200, body = Object, description = "The audit, as `earshot audit --json` prints it"),
              (status = 400, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 401, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 403, body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 429, body = crate::error::Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[get("/v1/admin/audit")]
pub async fn audit(
    state: web::Data<AppState>,
    who: Principal,
    params: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    who.require_admin()?;
    let hours = number("hours", params.hours.as_deref(), 24, 1..=MAX_AUDIT_HOURS)?;
    let in_flight = number(
        "in_flight_minutes",
        params.in_flight_minutes.as_deref(),
        DEFAULT_IN_FLIGHT.as_secs() / 60,
        0..=MAX_IN_FLIGHT_MINUTES,
    )?;
    let now = time::OffsetDateTime::now_utc();
    let to = ledger::hour_of(now) + time::Duration::hours(1);
    let report = ledger::audit(
        &state.pool,
        AuditOptions {
            from: to - time::Duration::hours(i64::from(hours)),
            to,
            now,
            in_flight: std::time::Duration::from_secs(in_flight * 60),
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(report))
}

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
/// parameter; documented as the whole numbers it must hold.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// UTC hours audited, up to and including the current one: 1-168 (default 24).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 168)]
    pub hours: Option<String>,
    /// Missing numbers younger than this many minutes are in flight, older ones lost: 0-1440 (default 15).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 1440)]
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
    responses((status = 200, body = earshot_platform::audit::Audit, description = "The audit, as `earshot audit --json` prints it"),
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

#[cfg(test)]
mod tests {
    use earshot_platform::audit::{Audit, EdgeSummary, Figures, HourReport, Missing, Tail};
    use serde_json::Value;
    use utoipa::OpenApi;

    /// The property names of a component schema, sorted.
    fn properties(doc: &Value, name: &str) -> Vec<String> {
        let mut keys: Vec<String> = doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {name}"))
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// The field names of a serialized object, sorted.
    fn fields(v: &Value) -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_openapi_document_describes_the_audit_as_it_is_served() {
        let doc = serde_json::to_value(crate::ApiDoc::openapi()).unwrap();
        let ok = &doc["paths"]["/v1/admin/audit"]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"];
        assert_eq!(ok["$ref"], "#/components/schemas/Audit", "{ok}");

        let at = time::macros::datetime!(2026-11-27 10:00 UTC);
        let figures = Figures {
            numbered: 10,
            stored: 9,
            lost: 1,
            ..Figures::default()
        };
        let edge = "0123456789abcdef0123456789abcdef".to_owned();
        let audit = Audit {
            from: at,
            to: at + time::Duration::HOUR,
            in_flight_seconds: 900,
            hours: vec![HourReport {
                hour: at,
                total: figures,
                quarantined_unnumbered: 0,
                edges: [(edge.clone(), figures)].into_iter().collect(),
            }],
            total: figures,
            quarantined_unnumbered: 0,
            missing: vec![Missing {
                edge: edge.clone(),
                lo: 6,
                hi: 6,
                proven_at: at,
                lost: true,
            }],
            edges: vec![EdgeSummary {
                edge,
                numbered: 10,
                last_heartbeat: Some(10),
                tail: Tail::Known,
            }],
        };
        let served = serde_json::to_value(&audit).unwrap();
        for (schema, value) in [
            ("Audit", &served),
            ("HourReport", &served["hours"][0]),
            ("Figures", &served["total"]),
            ("Missing", &served["missing"][0]),
            ("EdgeSummary", &served["edges"][0]),
        ] {
            assert_eq!(properties(&doc, schema), fields(value), "{schema}");
        }
        assert_eq!(
            doc["components"]["schemas"]["Tail"]["enum"],
            serde_json::json!(["known", "open", "unknown"])
        );
        // The parameters' ranges are the handler's.
        let params = doc["paths"]["/v1/admin/audit"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let range = |name: &str| {
            let p = params.iter().find(|p| p["name"] == name).unwrap();
            (
                p["schema"]["minimum"].as_u64(),
                p["schema"]["maximum"].as_u64(),
            )
        };
        assert_eq!(
            range("hours"),
            (Some(1), Some(u64::from(super::MAX_AUDIT_HOURS)))
        );
        assert_eq!(
            range("in_flight_minutes"),
            (Some(0), Some(super::MAX_IN_FLIGHT_MINUTES))
        );
    }
}

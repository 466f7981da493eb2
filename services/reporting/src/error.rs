//! The API's one error shape: RFC 9457 problem details
//! (`application/problem+json`), with `param` naming a bad parameter.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// `Retry-After` of a 503: long enough for a burst of heavy reports or a
/// database failover to pass, short enough for a dashboard's next refresh.
pub const RETRY_AFTER_SECONDS: u64 = 10;

/// PostgreSQL's SQLSTATE for a statement cancelled by `statement_timeout`
/// (`query_canceled`; the API never cancels statements otherwise).
const QUERY_CANCELED: &str = "57014";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened this time.
    pub detail: String,
    /// The query or body parameter at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadParam { param: String, detail: String },
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this endpoint needs an admin key")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("rate limit exceeded; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("the database is unavailable; retry in {RETRY_AFTER_SECONDS} s")]
    Unavailable,
    /// A statement ran past the API's `statement_timeout`.
    #[error("the query took longer than this API allows; retry in {RETRY_AFTER_SECONDS} s, or ask for a shorter range or fewer groups")]
    TimedOut,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

pub fn bad(param: &str, detail: impl Into<String>) -> ApiError {
    ApiError::BadParam {
        param: param.to_owned(),
        detail: detail.into(),
    }
}

impl ApiError {
    fn slug_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadParam { .. } => ("bad-parameter", "Bad parameter"),
            ApiError::Unauthorized => ("unauthorized", "Unauthorized"),
            ApiError::Forbidden => ("forbidden", "Forbidden"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::Conflict(_) => ("conflict", "Conflict"),
            ApiError::RateLimited { .. } => ("rate-limited", "Too many requests"),
            ApiError::Unavailable => ("unavailable", "Service unavailable"),
            ApiError::TimedOut => ("timed-out", "Query took too long"),
            ApiError::Internal(_) => ("internal", "Internal server error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (slug, title) = self.slug_title();
        Problem {
            kind: format!("https://earshot.dev/problems/{slug}"),
            title: title.into(),
            status: self.status_code().as_u16(),
            detail: self.to_string(),
            param: match self {
                ApiError::BadParam { param, .. } => Some(param.clone()),
                _ => None,
            },
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ApiError::Unavailable
            }
            sqlx::Error::Database(d) if d.code().as_deref() == Some(QUERY_CANCELED) => {
                ApiError::TimedOut
            }
            e => ApiError::Internal(e.into()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable | ApiError::TimedOut => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(e) = self {
            tracing::error!(error = %format!("{e:#}"), "internal error");
        }
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        match self {
            ApiError::Unauthorized => {
                resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::RateLimited { retry_after } => {
                resp.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            ApiError::Unavailable | ApiError::TimedOut => {
                resp.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string()));
            }
            _ => {}
        }
        resp.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}

/// Malformed JSON bodies, query strings and paths also answer as problems,
/// naming what could not be read.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    bad("body", format!("the JSON body could not be read: {err}")).into()
}

pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    let msg = err.to_string();
    let param = msg
        .split('`')
        .nth(1)
        .filter(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or("query")
        .to_owned();
    bad(&param, format!("the query string could not be read: {msg}")).into()
}

pub fn path_error(
    err: actix_web::error::PathError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    bad("path", format!("the path could not be read: {err}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_parameter_and_status() {
        let p = bad("from", "from is after to").problem();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "https://earshot.dev/problems/bad-parameter");
        assert_eq!(v["status"], 400);
        assert_eq!(v["param"], "from");
        assert_eq!(v["detail"], "from is after to");
        let v = serde_json::to_value(ApiError::NotFound("no campaign x".into()).problem()).unwrap();
        assert!(v.get("param").is_none());
    }
}

//! The catalog: advertisers, their campaigns and creatives, and the API keys
//! that see them. What the admin endpoints and `earshot admin` manage, with
//! its own error, which the API answers as problem+json.

use earshot_domain::{CampaignId, CreativeId};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgPool};
use time::{Date, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{api_key, Scope};
use crate::error::ApiError;

/// What a catalog operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A value that cannot be stored, named by its parameter.
    #[error("{detail}")]
    Invalid { param: String, detail: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

fn invalid(param: &str, detail: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        param: param.to_owned(),
        detail: detail.into(),
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Invalid { param, detail } => ApiError::BadParam { param, detail },
            CatalogError::NotFound(m) => ApiError::NotFound(m),
            CatalogError::Conflict(m) => ApiError::Conflict(m),
            CatalogError::Database(e) => ApiError::from(e),
        }
    }
}

/// Names are shown in dashboards; 200 characters is plenty.
pub const MAX_NAME_LEN: usize = 200;

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Advertiser {
    pub id: Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Campaign {
    /// The id used in pixel URLs (`c=`).
    pub id: String,
    pub advertiser_id: Uuid,
    pub name: String,
    /// First day of the flight (UTC), included.
    pub flight_start: Option<Date>,
    /// Last day of the flight (UTC), included.
    pub flight_end: Option<Date>,
    /// Counted impressions the campaign is meant to deliver.
    pub impression_goal: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Creative {
    pub campaign_id: String,
    pub id: String,
    pub name: String,
    pub duration_ms: Option<i32>,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    /// Shown in listings to tell keys apart; the key starts `esk_<prefix>_`.
    pub prefix: String,
    pub name: String,
    /// `admin` or `advertiser`.
    pub scope: String,
    pub advertiser_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A key as created: the only time its full text is ever shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The key itself. Store it now: it cannot be shown again.
    pub key: String,
}

fn check_name(param: &str, name: &str) -> Result<String, CatalogError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > MAX_NAME_LEN {
        return Err(invalid(
            param,
            format!("{param} must be 1-{MAX_NAME_LEN} characters"),
        ));
    }
    check_no_nul(param, n)?;
    Ok(n.to_owned())
}

/// PostgreSQL `text` cannot hold U+0000: refused as a bad parameter, not
/// left to fail in the database as a 500 (schemathesis found it).
fn check_no_nul(param: &str, value: &str) -> Result<(), CatalogError> {
    if value.contains('\0') {
        return Err(invalid(
            param,
            format!("{param} must not contain the NUL character (U+0000)"),
        ));
    }
    Ok(())
}

fn check_flight(start: Option<Date>, end: Option<Date>) -> Result<(), CatalogError> {
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            return Err(invalid(
                "flight_end",
                format!("flight_end {e} is before flight_start {s}"),
            ));
        }
    }
    Ok(())
}

fn check_goal(goal: Option<i64>) -> Result<(), CatalogError> {
    if goal.is_some_and(|g| g < 0) {
        return Err(invalid(
            "impression_goal",
            "impression_goal must be 0 or more",
        ));
    }
    Ok(())
}

pub async fn create_advertiser(pool: &PgPool, name: &str) -> Result<Advertiser, CatalogError> {
    let name = check_name("name", name)?;
    Ok(sqlx::query_as(
        "INSERT INTO advertisers (id, name) VALUES ($1, $2) RETURNING id, name, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_one(pool)
    .await?)
}

pub async fn update_advertiser(
    pool: &PgPool,
    id: Uuid,
    name: &str,
) -> Result<Advertiser, CatalogError> {
    let name = check_name("name", name)?;
    sqlx::query_as("UPDATE advertisers SET name = $2, updated_at = now() WHERE id = $1 RETURNING id, name, created_at")
        .bind(id)
        .bind(name)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| CatalogError::NotFound(format!("no advertiser {id}")))
}

pub async fn list_advertisers(pool: &PgPool) -> Result<Vec<Advertiser>, CatalogError> {
    Ok(
        sqlx::query_as("SELECT id, name, created_at FROM advertisers ORDER BY name, id")
            .fetch_all(pool)
            .await?,
    )
}

pub async fn get_advertiser(pool: &PgPool, id: Uuid) -> Result<Advertiser, CatalogError> {
    sqlx::query_as("SELECT id, name, created_at FROM advertisers WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| CatalogError::NotFound(format!("no advertiser {id}")))
}

/// A campaign to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// The id used in pixel URLs: 1-64 of A-Z a-z 0-9 . _ -
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    pub advertiser_id: Uuid,
    /// Defaults to the id.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    pub flight_start: Option<Date>,
    /// On or after flight_start.
    pub flight_end: Option<Date>,
    #[schema(minimum = 0)]
    pub impression_goal: Option<i64>,
}

/// The columns a campaign query returns. The queries paste this constant
/// into their text (hence `AssertSqlSafe`); every value is bound.
const CAMPAIGN_COLS: &str =
    "id, advertiser_id, name, flight_start, flight_end, impression_goal, created_at, updated_at";

pub async fn create_campaign(pool: &PgPool, c: &NewCampaign) -> Result<Campaign, CatalogError> {
    let id = CampaignId::parse(&c.id).map_err(|e| invalid("id", e.to_string()))?;
    let name = check_name("name", c.name.as_deref().unwrap_or(id.as_str()))?;
    check_flight(c.flight_start, c.flight_end)?;
    check_goal(c.impression_goal)?;
    let exists: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM advertisers WHERE id = $1")
        .bind(c.advertiser_id)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Err(invalid(
            "advertiser_id",
            format!("no advertiser {}", c.advertiser_id),
        ));
    }
    let row: Option<Campaign> = sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO campaigns (id, advertiser_id, name, flight_start, flight_end, impression_goal)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING RETURNING {CAMPAIGN_COLS}"
    )))
    .bind(id.as_str())
    .bind(c.advertiser_id)
    .bind(name)
    .bind(c.flight_start)
    .bind(c.flight_end)
    .bind(c.impression_goal)
    .fetch_optional(pool)
    .await?;
    row.ok_or_else(|| CatalogError::Conflict(format!("campaign {} already exists", id)))
}

/// Fields to change; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignPatch {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    pub flight_start: Option<Date>,
    pub flight_end: Option<Date>,
    #[schema(minimum = 0)]
    pub impression_goal: Option<i64>,
}

pub async fn update_campaign(
    pool: &PgPool,
    id: &str,
    p: &CampaignPatch,
) -> Result<Campaign, CatalogError> {
    let current = get_campaign(pool, id, None).await?;
    let name = match &p.name {
        Some(n) => check_name("name", n)?,
        None => current.name.clone(),
    };
    let start = p.flight_start.or(current.flight_start);
    let end = p.flight_end.or(current.flight_end);
    check_flight(start, end)?;
    check_goal(p.impression_goal)?;
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE campaigns SET name = $2, flight_start = $3, flight_end = $4,
                impression_goal = coalesce($5, impression_goal), updated_at = now()
         WHERE id = $1 RETURNING {CAMPAIGN_COLS}"
    )))
    .bind(id)
    .bind(name)
    .bind(start)
    .bind(end)
    .bind(p.impression_goal)
    .fetch_one(pool)
    .await?)
}

/// A campaign, if `advertiser` (None: any) may see it. Anything else is a
/// 404 that reads exactly like a missing campaign.
pub async fn get_campaign(
    pool: &PgPool,
    id: &str,
    advertiser: Option<Uuid>,
) -> Result<Campaign, CatalogError> {
    let not_found = || CatalogError::NotFound(format!("no campaign {id}"));
    if CampaignId::parse(id).is_err() {
        return Err(not_found());
    }
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {CAMPAIGN_COLS} FROM campaigns WHERE id = $1 AND ($2::uuid IS NULL OR advertiser_id = $2)"
    )))
    .bind(id)
    .bind(advertiser)
    .fetch_optional(pool)
    .await?
    .ok_or_else(not_found)
}

pub async fn list_campaigns(
    pool: &PgPool,
    advertiser: Option<Uuid>,
) -> Result<Vec<Campaign>, CatalogError> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {CAMPAIGN_COLS} FROM campaigns WHERE $1::uuid IS NULL OR advertiser_id = $1 ORDER BY id"
    )))
    .bind(advertiser)
    .fetch_all(pool)
    .await?)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCreative {
    /// The id used in pixel URLs (`cr=`).
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    /// Defaults to the id.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    #[schema(minimum = 1)]
    pub duration_ms: Option<i32>,
}

/// Creates or updates a creative of a campaign.
pub async fn put_creative(
    pool: &PgPool,
    campaign: &str,
    c: &NewCreative,
) -> Result<Creative, CatalogError> {
    let id = CreativeId::parse(&c.id).map_err(|e| invalid("id", e.to_string()))?;
    let name = check_name("name", c.name.as_deref().unwrap_or(id.as_str()))?;
    if c.duration_ms.is_some_and(|d| d <= 0) {
        return Err(invalid("duration_ms", "duration_ms must be positive"));
    }
    get_campaign(pool, campaign, None).await?;
    Ok(sqlx::query_as(
        "INSERT INTO creatives (campaign_id, id, name, duration_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (campaign_id, id) DO UPDATE SET name = EXCLUDED.name, duration_ms = EXCLUDED.duration_ms, updated_at = now()
         RETURNING campaign_id, id, name, duration_ms",
    )
    .bind(campaign)
    .bind(id.as_str())
    .bind(name)
    .bind(c.duration_ms)
    .fetch_one(pool)
    .await?)
}

pub async fn list_creatives(pool: &PgPool, campaign: &str) -> Result<Vec<Creative>, CatalogError> {
    Ok(sqlx::query_as("SELECT campaign_id, id, name, duration_ms FROM creatives WHERE campaign_id = $1 ORDER BY id")
        .bind(campaign)
        .fetch_all(pool)
        .await?)
}

/// The columns a key query returns, pasted like [`CAMPAIGN_COLS`].
const KEY_COLS: &str = "id, prefix, name, scope, advertiser_id, created_at, revoked_at";

pub async fn create_key(
    pool: &PgPool,
    scope: Scope,
    name: &str,
) -> Result<CreatedKey, CatalogError> {
    if name.chars().count() > MAX_NAME_LEN {
        return Err(invalid(
            "name",
            format!("name must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    check_no_nul("name", name)?;
    if let Scope::Advertiser(a) = scope {
        let exists: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM advertisers WHERE id = $1")
            .bind(a)
            .fetch_optional(pool)
            .await?;
        if exists.is_none() {
            return Err(invalid("advertiser_id", format!("no advertiser {a}")));
        }
    }
    let k = api_key::generate();
    let mut tx = pool.begin().await?;
    let info: ApiKeyInfo = sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, prefix, hash, name, scope, advertiser_id) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING {KEY_COLS}"
    )))
    .bind(Uuid::now_v7())
    .bind(&k.prefix)
    .bind(&k.hash)
    .bind(name.trim())
    .bind(match scope {
        Scope::Admin => "admin",
        Scope::Advertiser(_) => "advertiser",
    })
    .bind(scope.advertiser())
    .fetch_one(&mut *tx)
    .await?;
    // Every API replica learns the new prefix when this commits: until
    // then a prefix no live key has is refused without a query (beyond a
    // small budget), `auth::key_cache`.
    sqlx::query("SELECT pg_notify($1, 'p ' || $2)")
        .bind(crate::live::CHANNEL)
        .bind(&k.prefix)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(CreatedKey { info, key: k.full })
}

pub async fn list_keys(pool: &PgPool) -> Result<Vec<ApiKeyInfo>, CatalogError> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, id"
    )))
    .fetch_all(pool)
    .await?)
}

/// One key's listing, revoked or not (never the key itself).
pub async fn get_key(pool: &PgPool, id: Uuid) -> Result<ApiKeyInfo, CatalogError> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {KEY_COLS} FROM api_keys WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| CatalogError::NotFound(format!("no key {id}")))
}

/// Revokes a key by id or prefix; effective on the next request.
pub async fn revoke_key(pool: &PgPool, id_or_prefix: &str) -> Result<ApiKeyInfo, CatalogError> {
    let id = Uuid::parse_str(id_or_prefix).ok();
    if id.is_none() && !api_key::looks_like_a_prefix(id_or_prefix) {
        return Err(CatalogError::NotFound(format!("no key {id_or_prefix}")));
    }
    let mut tx = pool.begin().await?;
    let info: ApiKeyInfo = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
         WHERE ($1::uuid IS NOT NULL AND id = $1) OR prefix = $2 RETURNING {KEY_COLS}"
    )))
    .bind(id)
    .bind(id_or_prefix)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| CatalogError::NotFound(format!("no key {id_or_prefix}")))?;
    // Every API replica drops the key from its cache when this commits.
    sqlx::query("SELECT pg_notify($1, 'k ' || $2::text)")
        .bind(crate::live::CHANNEL)
        .bind(info.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(info)
}

/// The advertiser owning a campaign (None: no such campaign).
pub async fn campaign_owner(pool: &PgPool, id: &str) -> Result<Option<Uuid>, CatalogError> {
    if CampaignId::parse(id).is_err() {
        return Ok(None);
    }
    Ok(
        sqlx::query_scalar("SELECT advertiser_id FROM campaigns WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_a_nul_character_are_a_bad_parameter_named_in_the_error() {
        assert_eq!(check_name("name", "  Acme  ").unwrap(), "Acme");
        for (param, value) in [("name", "R\u{1e}H\u{0}x"), ("advertiser_name", "\u{0}")] {
            match check_name(param, value) {
                Err(CatalogError::Invalid { param: p, detail }) => {
                    assert_eq!(p, param);
                    assert_eq!(
                        detail,
                        format!("{param} must not contain the NUL character (U+0000)")
                    );
                }
                other => panic!("{value:?}: {other:?}"),
            }
        }
        assert!(check_no_nul("name", "").is_ok());
    }
}

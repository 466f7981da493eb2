//! Where a report is cached, and what its response says.
//!
//! A rendered report is kept in process, then in Redis (shared by the
//! replicas), under a key made of the database, the campaign, its data
//! version and the whole normalized request. Every load that touches a
//! campaign bumps its version (the loader's `BUMP_VERSIONS`), so a cached
//! report is never stale: a new version is a new key, and the replicas hear
//! of it through PostgreSQL's notifications (`live.rs`). The TTL only bounds
//! memory.
//!
//! Cached or not, a report answers with the same headers, built here once:
//! its content type, `x-cache`, `Vary: Accept-Encoding`, gzip for clients
//! that accept it, and `Link: <…>; rel="next"` naming the next page with
//! every other query parameter as the request gave it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use sqlx::PgPool;

use crate::error::ApiError;
use crate::live::Live;
use crate::redis_store::RedisStore;
use crate::report::{Format, ReportSpec};

/// A report as rendered: its body, and the token of its next page.
#[derive(Clone)]
pub struct Rendered {
    pub body: Bytes,
    pub next_page_token: Option<String>,
}

/// A rendered report as cached: also gzipped once for the clients that
/// accept it, so a hit is served without rendering or compressing again.
#[derive(Clone)]
pub struct CachedReport {
    pub report: Rendered,
    pub gzip: Bytes,
}

impl CachedReport {
    pub fn new(r: Rendered) -> Self {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(r.body.len() / 4),
            flate2::Compression::fast(),
        );
        // Writing to a Vec cannot fail.
        let gzip = enc
            .write_all(&r.body)
            .and_then(|()| enc.finish())
            .expect("gzip into memory");
        Self {
            report: r,
            gzip: Bytes::from(gzip),
        }
    }

    fn len(&self) -> usize {
        self.report.body.len() + self.gzip.len()
    }

    /// As Redis holds it: the next page's token (URL-safe base64, so never
    /// a newline; empty on the last page), a newline, then the body.
    fn to_redis(r: &Rendered) -> Vec<u8> {
        let token = r.next_page_token.as_deref().unwrap_or("");
        let mut v = Vec::with_capacity(token.len() + 1 + r.body.len());
        v.extend_from_slice(token.as_bytes());
        v.push(b'\n');
        v.extend_from_slice(&r.body);
        v
    }

    /// What [`CachedReport::to_redis`] wrote; `None` for anything else.
    fn from_redis(v: Vec<u8>) -> Option<Rendered> {
        let nl = v.iter().position(|&b| b == b'\n')?;
        let token = std::str::from_utf8(&v[..nl]).ok()?;
        let next_page_token = (!token.is_empty()).then(|| token.to_owned());
        let body = Bytes::from(v).slice(nl + 1..);
        Some(Rendered {
            body,
            next_page_token,
        })
    }
}

/// Reports held in process before the cache starts over (bounded memory).
const MAX_REPORTS: usize = 10_000;
/// Bytes of rendered reports kept in process.
const MAX_REPORT_BYTES: usize = 64 << 20;

/// Rendered reports in this process, by cache key, with when they were kept.
#[derive(Default)]
struct InProcess {
    reports: HashMap<String, (Instant, CachedReport)>,
    bytes: usize,
}

/// The report cache of one API replica.
pub struct ReportCache {
    pool: PgPool,
    /// The campaigns' data versions, kept exact by notifications.
    live: Arc<Live>,
    memory: Mutex<InProcess>,
    redis: RedisStore,
    /// How long a cached report is kept; zero turns caching off.
    ttl: Duration,
    /// Prefix of cache keys: the database's name, so two deployments (or
    /// test databases) sharing a Redis never read each other's reports.
    namespace: String,
}

impl ReportCache {
    pub fn new(
        pool: PgPool,
        live: Arc<Live>,
        redis: RedisStore,
        ttl: Duration,
        namespace: String,
    ) -> Self {
        Self {
            pool,
            live,
            memory: Mutex::default(),
            redis,
            ttl,
            namespace,
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, InProcess> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, key: &str, report: CachedReport) {
        let mut m = self.memory();
        if m.reports.len() >= MAX_REPORTS || m.bytes + report.len() > MAX_REPORT_BYTES {
            m.reports.clear();
            m.bytes = 0;
        }
        m.bytes += report.len();
        if let Some((_, old)) = m.reports.insert(key.to_owned(), (Instant::now(), report)) {
            m.bytes -= old.len();
        }
    }

    /// The campaign's data version, from memory while the change listener
    /// is live, else from the database.
    async fn version(&self, campaign: &str) -> Result<i64, ApiError> {
        if let Some(v) = self.live.version(campaign) {
            return Ok(v);
        }
        let generation = self.live.generation();
        let v: Option<i64> =
            sqlx::query_scalar("SELECT version FROM campaign_data_versions WHERE campaign = $1")
                .bind(campaign)
                .fetch_optional(&self.pool)
                .await?;
        let v = v.unwrap_or(0);
        self.live.remember_version(campaign, v, generation);
        Ok(v)
    }

    async fn get(&self, key: &str) -> Option<CachedReport> {
        let held = self
            .memory()
            .reports
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, r)| r.clone());
        if held.is_some() {
            return held;
        }
        let shared = CachedReport::from_redis(self.redis.get(key).await?)?;
        let cached = CachedReport::new(shared);
        self.remember(key, cached.clone());
        Some(cached)
    }

    async fn put(&self, key: &str, r: Rendered) {
        self.redis
            .set(key, &CachedReport::to_redis(&r), self.ttl.as_secs())
            .await;
        self.remember(key, CachedReport::new(r));
    }

    /// The response to `req` for `campaign`'s report `spec`: from the cache,
    /// or rendered by `render` (and cached).
    pub async fn respond<F, Fut>(
        &self,
        req: &HttpRequest,
        campaign: &str,
        spec: &ReportSpec,
        render: F,
    ) -> Result<HttpResponse, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Rendered, ApiError>>,
    {
        if self.ttl.is_zero() {
            return Ok(respond(req, spec, "miss", &render().await?, None));
        }
        let key = spec.cache_key(&self.namespace, campaign, self.version(campaign).await?);
        if let Some(hit) = self.get(&key).await {
            metrics::counter!("earshot_api_cache_total", "outcome" => "hit").increment(1);
            return Ok(respond(req, spec, "hit", &hit.report, Some(&hit.gzip)));
        }
        metrics::counter!("earshot_api_cache_total", "outcome" => "miss").increment(1);
        let r = render().await?;
        self.put(&key, r.clone()).await;
        Ok(respond(req, spec, "miss", &r, None))
    }
}

/// A report's response: the same headers whether it was cached or not.
fn respond(
    req: &HttpRequest,
    spec: &ReportSpec,
    cache: &'static str,
    report: &Rendered,
    gzip: Option<&Bytes>,
) -> HttpResponse {
    let mut resp = HttpResponse::Ok();
    resp.content_type(match spec.format {
        Format::Json => "application/json",
        Format::Csv => "text/csv; charset=utf-8",
    })
    .insert_header(("x-cache", cache))
    .insert_header((header::VARY, "Accept-Encoding"));
    if let Some(token) = &report.next_page_token {
        resp.insert_header((header::LINK, next_link(req.query_string(), token)));
    }
    match gzip {
        Some(gz) if accepts_gzip(req) => {
            resp.insert_header((header::CONTENT_ENCODING, "gzip"));
            resp.body(gz.clone())
        }
        _ => resp.body(report.body.clone()),
    }
}

/// `Link` to the next page: the request's query string as it came, every
/// parameter kept but `page_token`, which names the next page.
pub fn next_link(query: &str, token: &str) -> String {
    let mut parts: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("");
            percent_encoding::percent_decode_str(name).decode_utf8_lossy() != "page_token"
        })
        .collect();
    let next = format!("page_token={token}");
    parts.push(&next);
    format!("<?{}>; rel=\"next\"", parts.join("&"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_keeps_every_parameter_but_the_old_token() {
        assert_eq!(
            next_link(
                "from=2026-11-01&group_by=creative%2Ccountry&page_token=old&limit=3",
                "new"
            ),
            "<?from=2026-11-01&group_by=creative%2Ccountry&limit=3&page_token=new>; rel=\"next\""
        );
        assert_eq!(next_link("", "t"), "<?page_token=t>; rel=\"next\"");
        assert_eq!(
            next_link("page%5Ftoken=old&format=csv", "t"),
            "<?format=csv&page_token=t>; rel=\"next\""
        );
    }

    #[test]
    fn a_cached_report_keeps_its_next_page_token_through_redis() {
        for token in [Some("abc_-"), None] {
            let r = Rendered {
                body: Bytes::from_static(b"a,b\r\n1,2\r\n"),
                next_page_token: token.map(str::to_owned),
            };
            let back = CachedReport::from_redis(CachedReport::to_redis(&r)).unwrap();
            assert_eq!(back.body, r.body);
            assert_eq!(back.next_page_token, r.next_page_token);
        }
    }
}

#![doc = include_str!("../README.md")]

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{LazyLock, OnceLock};

use actix_web::http::header::{self, AcceptEncoding, Encoding, Header as _};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

/// Where every page and asset may load from: this origin only. Pages hold
/// no inline script or style (both libraries work without), images may be
/// `data:` URLs (Swagger UI's icons), and nothing may frame the pages.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
    manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Assets are served under a path holding a hash of their bytes, so a URL
/// always names the same bytes and browsers may keep them for a year
/// (RFC 8246 `immutable`: not even revalidated on reload).
const ASSET_CACHE: &str = "public, max-age=31536000, immutable";
/// Pages are revalidated on every load (a 304 when unchanged), so a new
/// binary's pages, and through them its assets, are seen at once.
const PAGE_CACHE: &str = "no-cache";
/// Hex digits of the SHA-256 in asset paths: 48 bits, plenty to tell a
/// handful of files' versions apart.
const HASH_HEX_LEN: usize = 12;

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const HTML: &str = "text/html; charset=utf-8";

/// One embedded file, by the name pages use for it (`{{name}}`).
struct File {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! embed {
    ($name:literal, $content_type:expr, $path:literal) => {
        File {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../assets/", $path)),
        }
    };
}

/// Everything pages load. `vendor/` holds the npm packages pinned in
/// `assets/vendor/VERSIONS` (refreshed by `scripts/vendor-web`).
const ASSETS: [File; 8] = [
    embed!("app.js", JS, "app/app.js"),
    embed!("app.css", CSS, "app/app.css"),
    embed!("favicon.svg", SVG, "app/favicon.svg"),
    embed!("docs.js", JS, "docs/docs.js"),
    embed!("uPlot.iife.min.js", JS, "vendor/uplot/uPlot.iife.min.js"),
    embed!("uPlot.min.css", CSS, "vendor/uplot/uPlot.min.css"),
    embed!(
        "swagger-ui-bundle.js",
        JS,
        "vendor/swagger-ui/swagger-ui-bundle.js"
    ),
    embed!("swagger-ui.css", CSS, "vendor/swagger-ui/swagger-ui.css"),
];

/// The dashboard's one page (the script routes `/app/...` itself).
const APP_PAGE: &str = include_str!("../assets/app/index.html");
/// The API reference.
const DOCS_PAGE: &str = include_str!("../assets/docs/index.html");

/// A response body, with its gzip form made on first use.
struct Body {
    content_type: &'static str,
    bytes: Bytes,
    /// Weak: the gzip and identity forms share it.
    etag: String,
    gzip: OnceLock<Option<Bytes>>,
}

impl Body {
    fn new(content_type: &'static str, bytes: Bytes) -> Self {
        let etag = format!("W/\"{}\"", &hash_hex(&bytes)[..HASH_HEX_LEN]);
        Self {
            content_type,
            bytes,
            etag,
            gzip: OnceLock::new(),
        }
    }

    /// The gzip form, when it is smaller.
    fn gzip(&self) -> Option<Bytes> {
        self.gzip
            .get_or_init(|| {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.bytes.len() / 3),
                    flate2::Compression::best(),
                );
                gz.write_all(&self.bytes).ok()?;
                let out = gz.finish().ok()?;
                (out.len() < self.bytes.len()).then(|| Bytes::from(out))
            })
            .clone()
    }
}

fn hash_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every page and asset, ready to send.
struct Site {
    /// By URL path (`/assets/<hash>/<name>`).
    assets: HashMap<String, Body>,
    app: Body,
    docs: Body,
}

static SITE: LazyLock<Site> = LazyLock::new(Site::build);

impl Site {
    fn build() -> Self {
        let urls: Vec<(&str, String)> = ASSETS
            .iter()
            .map(|f| (f.name, asset_url(f.name, f.bytes)))
            .collect();
        let render = |page: &str| {
            let out = urls.iter().fold(page.to_owned(), |out, (name, url)| {
                out.replace(&format!("{{{{{name}}}}}"), url)
            });
            assert!(
                !out.contains("{{"),
                "a page names an asset that is not embedded: {out}"
            );
            Body::new(HTML, Bytes::from(out))
        };
        Self {
            app: render(APP_PAGE),
            docs: render(DOCS_PAGE),
            assets: ASSETS
                .iter()
                .zip(&urls)
                .map(|(f, (_, url))| {
                    (
                        url.clone(),
                        Body::new(f.content_type, Bytes::from_static(f.bytes)),
                    )
                })
                .collect(),
        }
    }
}

fn asset_url(name: &str, bytes: &[u8]) -> String {
    format!("/assets/{}/{name}", &hash_hex(bytes)[..HASH_HEX_LEN])
}

/// Registers `/` (a redirect to `/app`), `/app` and everything under it
/// (the dashboard's page), `/docs` and `/assets/...`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/app", web::get().to(app_page))
        .route("/app/{route:.*}", web::get().to(app_page))
        .route("/docs", web::get().to(docs_page))
        .route("/assets/{hash}/{name}", web::get().to(asset));
}

async fn root() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/app"))
        .finish()
}

async fn app_page(req: HttpRequest) -> HttpResponse {
    send(&req, &SITE.app, PAGE_CACHE)
}

async fn docs_page(req: HttpRequest) -> HttpResponse {
    send(&req, &SITE.docs, PAGE_CACHE)
}

async fn asset(req: HttpRequest) -> HttpResponse {
    match SITE.assets.get(req.path()) {
        Some(body) => send(&req, body, ASSET_CACHE),
        None => {
            let mut r = HttpResponse::NotFound();
            security_headers(&mut r);
            r.content_type("text/plain; charset=utf-8")
                .body("no such asset in this version of earshot\n")
        }
    }
}

fn security_headers(r: &mut actix_web::HttpResponseBuilder) {
    r.insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
}

fn send(req: &HttpRequest, body: &Body, cache: &'static str) -> HttpResponse {
    let mut r = HttpResponse::Ok();
    security_headers(&mut r);
    r.insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ETAG, body.etag.as_str()))
        .insert_header((header::VARY, "Accept-Encoding"));
    if matches_etag(req, &body.etag) {
        return r.status(actix_web::http::StatusCode::NOT_MODIFIED).finish();
    }
    r.content_type(body.content_type);
    if wants_gzip(req) {
        if let Some(gz) = body.gzip() {
            return r.insert_header((header::CONTENT_ENCODING, "gzip")).body(gz);
        }
    }
    r.body(body.bytes.clone())
}

/// `If-None-Match` names `etag` (weak comparison, RFC 9110 §13.1.2) or is `*`.
fn matches_etag(req: &HttpRequest, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || bare(t) == bare(etag))
}

fn wants_gzip(req: &HttpRequest) -> bool {
    AcceptEncoding::parse(req).is_ok_and(|a| {
        a.negotiate([Encoding::gzip(), Encoding::identity()].iter()) == Some(Encoding::gzip())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored files are the npm packages' own bytes, as
    /// `scripts/vendor-web` wrote them down: nobody edited them by hand.
    #[test]
    fn vendored_files_match_the_checksums_written_when_they_were_fetched() {
        let vendor = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/vendor");
        let manifest = std::fs::read_to_string(format!("{vendor}/VERSIONS")).unwrap();
        let mut checked = 0;
        for line in manifest
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let mut fields = line.split_whitespace();
            let dir = fields.next().unwrap();
            let files: Vec<&str> = fields.skip(3).collect();
            let sums = std::fs::read_to_string(format!("{vendor}/{dir}/SHA256SUMS")).unwrap();
            assert_eq!(sums.lines().count(), files.len(), "{dir}/SHA256SUMS");
            for f in files {
                let name = f.rsplit('/').next().unwrap();
                let want = sums
                    .lines()
                    .find_map(|l| l.strip_suffix(&format!("  {name}")))
                    .unwrap_or_else(|| panic!("{dir}/SHA256SUMS has no {name}"));
                let bytes = std::fs::read(format!("{vendor}/{dir}/{name}")).unwrap();
                assert_eq!(hash_hex(&bytes), want, "{dir}/{name}");
                checked += 1;
            }
        }
        assert_eq!(checked, 8, "files listed in VERSIONS");
        // Every embedded vendor file is one of them.
        for f in ASSETS
            .iter()
            .filter(|f| f.name.starts_with("uPlot") || f.name.starts_with("swagger"))
        {
            assert!(manifest.contains(f.name), "{} is not in VERSIONS", f.name);
        }
    }

    #[test]
    fn pages_name_assets_by_the_hash_of_their_bytes() {
        let site = Site::build();
        let page = std::str::from_utf8(&site.app.bytes).unwrap();
        let js = &ASSETS[0];
        let url = asset_url(js.name, js.bytes);
        assert!(page.contains(&format!("src=\"{url}\"")), "{page}");
        assert_eq!(site.assets[&url].bytes, js.bytes);
        assert_eq!(
            url.len(),
            "/assets/".len() + HASH_HEX_LEN + 1 + js.name.len()
        );
    }
}

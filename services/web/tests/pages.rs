//! The pages and their assets as a browser fetches them: every asset a page
//! references answers 200 with its content type, every response carries a
//! Content-Security-Policy that allows this origin only.

use actix_web::http::{header, StatusCode};
use actix_web::{test, App};

/// `src="..."` and `href="..."` values of a page.
fn references(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = page;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').expect("a closed attribute");
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

/// Every source a CSP directive allows is `'self'`, `'none'` or `data:`:
/// no other origin, no inline script or style.
fn assert_first_party_csp(path: &str, csp: &str) {
    let mut directives = Vec::new();
    for d in csp.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let mut parts = d.split_whitespace();
        let name = parts.next().unwrap();
        directives.push(name.to_owned());
        for source in parts {
            let allowed =
                ["'self'", "'none'"].contains(&source) || (name == "img-src" && source == "data:");
            assert!(allowed, "{path}: {name} allows {source} ({csp})");
        }
    }
    for needed in [
        "default-src",
        "script-src",
        "style-src",
        "connect-src",
        "frame-ancestors",
        "base-uri",
    ] {
        assert!(
            directives.iter().any(|d| d == needed),
            "{path}: no {needed} in {csp}"
        );
    }
}

/// GET `path` from `app`, saying the client takes gzip when `gzip`.
macro_rules! get {
    ($app:expr, $path:expr, $gzip:expr) => {{
        let mut req = test::TestRequest::get().uri($path);
        if $gzip {
            req = req.insert_header((header::ACCEPT_ENCODING, "gzip, deflate, br"));
        }
        test::call_service(&$app, req.to_request()).await
    }};
}

fn header_of(resp: &actix_web::dev::ServiceResponse, name: header::HeaderName) -> String {
    resp.headers()
        .get(&name)
        .unwrap_or_else(|| panic!("{} has no {name}", resp.request().path()))
        .to_str()
        .unwrap()
        .to_owned()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[actix_web::test]
async fn docs_and_every_asset_it_references_load_from_this_origin_with_their_types() {
    let app = test::init_service(App::new().configure(earshot_web::configure)).await;
    for page in ["/docs", "/app"] {
        let resp = get!(app, page, false);
        assert_eq!(resp.status(), StatusCode::OK, "{page}");
        assert_eq!(
            header_of(&resp, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_first_party_csp(page, &header_of(&resp, header::CONTENT_SECURITY_POLICY));
        assert_eq!(header_of(&resp, header::CACHE_CONTROL), "no-cache");
        let html = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
        let refs = references(&html);
        let want: &[(&str, &str)] = if page == "/docs" {
            &[
                ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
                ("docs.js", "text/javascript; charset=utf-8"),
                ("swagger-ui.css", "text/css; charset=utf-8"),
                ("favicon.svg", "image/svg+xml"),
            ]
        } else {
            &[
                ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
                ("app.js", "text/javascript; charset=utf-8"),
                ("uPlot.min.css", "text/css; charset=utf-8"),
                ("app.css", "text/css; charset=utf-8"),
                ("favicon.svg", "image/svg+xml"),
            ]
        };
        let assets: Vec<&String> = refs.iter().filter(|r| r.starts_with("/assets/")).collect();
        assert_eq!(assets.len(), want.len(), "{page} references {refs:?}");
        for (name, content_type) in want {
            let url = assets
                .iter()
                .find(|r| r.ends_with(&format!("/{name}")))
                .unwrap_or_else(|| panic!("{page} does not load {name}: {refs:?}"));
            let resp = get!(app, url.as_str(), false);
            assert_eq!(resp.status(), StatusCode::OK, "{url}");
            assert_eq!(
                header_of(&resp, header::CONTENT_TYPE),
                *content_type,
                "{url}"
            );
            assert_first_party_csp(url, &header_of(&resp, header::CONTENT_SECURITY_POLICY));
            assert_eq!(header_of(&resp, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(
                header_of(&resp, header::CACHE_CONTROL),
                "public, max-age=31536000, immutable",
                "{url}"
            );
            assert!(!test::read_body(resp).await.is_empty(), "{url}");
        }
        // Nothing else: no absolute URL to another origin anywhere in the page.
        for r in &refs {
            let local = r.starts_with('#') || (r.starts_with('/') && !r.starts_with("//"));
            assert!(local, "{page} references {r}");
        }
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{page}: {html}"
        );
    }
}

#[actix_web::test]
async fn root_redirects_to_the_dashboard_and_its_routes_all_get_its_page() {
    let app = test::init_service(App::new().configure(earshot_web::configure)).await;
    let resp = get!(app, "/", false);
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(header_of(&resp, header::LOCATION), "/app");
    let page = test::read_body(get!(app, "/app", false)).await;
    for route in ["/app/", "/app/campaigns/spring-sale", "/app/admin/keys"] {
        let resp = get!(app, route, false);
        assert_eq!(resp.status(), StatusCode::OK, "{route}");
        assert_eq!(test::read_body(resp).await, page, "{route}");
    }
}

#[actix_web::test]
async fn bodies_are_gzipped_for_clients_that_take_it_and_revalidate_by_etag() {
    let app = test::init_service(App::new().configure(earshot_web::configure)).await;
    let html = test::read_body(get!(app, "/app", false)).await;
    let js_url = references(std::str::from_utf8(&html).unwrap())
        .into_iter()
        .find(|r| r.ends_with("/app.js"))
        .unwrap();
    for path in ["/app", js_url.as_str()] {
        let plain = get!(app, path, false);
        assert!(
            plain.headers().get(header::CONTENT_ENCODING).is_none(),
            "{path}"
        );
        assert_eq!(header_of(&plain, header::VARY), "Accept-Encoding");
        let etag = header_of(&plain, header::ETAG);
        let plain = test::read_body(plain).await;

        let zipped = get!(app, path, true);
        assert_eq!(
            header_of(&zipped, header::CONTENT_ENCODING),
            "gzip",
            "{path}"
        );
        assert_eq!(header_of(&zipped, header::ETAG), etag);
        let zipped = test::read_body(zipped).await;
        assert!(
            zipped.len() < plain.len(),
            "{path}: {} >= {}",
            zipped.len(),
            plain.len()
        );
        assert_eq!(gunzip(&zipped), plain.to_vec(), "{path}");

        let req = test::TestRequest::get()
            .uri(path)
            .insert_header((header::IF_NONE_MATCH, etag.as_str()))
            .to_request();
        let again = test::call_service(&app, req).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert!(test::read_body(again).await.is_empty());
    }
    // Another version's asset path is not served as this one.
    let stale = format!(
        "/assets/000000000000/{}",
        js_url.rsplit('/').next().unwrap()
    );
    assert_eq!(
        get!(app, stale.as_str(), false).status(),
        StatusCode::NOT_FOUND
    );
}

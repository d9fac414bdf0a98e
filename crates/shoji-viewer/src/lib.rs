//! The browser trace viewer, embedded as static assets and served by `shoji trace serve`.
//!
//! [`router`] serves the pages (`/`, `/search`, `/trace/{id}`, `/compare/{a}/{b}`,
//! `/dependencies`) and their assets; the data comes from the `/api/...` routes of `shoji-trace`
//! (Jaeger's query API, and `/api/viewer/traces/{id}`, a compact form of one trace with self
//! times), which the server merges beside this router. The viewer is plain ES modules with no build step and no
//! third-party code (ADR 004): what the binary embeds is exactly what is in `assets/`.
//!
//! Span names and attributes come from untrusted guests. The scripts only ever put text into the
//! page, and every response carries a Content-Security-Policy that allows scripts from this
//! origin only, so even a missed escape could not run an injected inline script.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// (name under /assets/, content type, content)
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JS, include_str!("../assets/app.js")),
    ("api.js", JS, include_str!("../assets/api.js")),
    ("compare.js", JS, include_str!("../assets/compare.js")),
    ("deps.js", JS, include_str!("../assets/deps.js")),
    ("details.js", JS, include_str!("../assets/details.js")),
    ("dom.js", JS, include_str!("../assets/dom.js")),
    ("find.js", JS, include_str!("../assets/find.js")),
    ("findbar.js", JS, include_str!("../assets/findbar.js")),
    ("flame.js", JS, include_str!("../assets/flame.js")),
    ("graph.js", JS, include_str!("../assets/graph.js")),
    ("model.js", JS, include_str!("../assets/model.js")),
    ("search.js", JS, include_str!("../assets/search.js")),
    ("stats.js", JS, include_str!("../assets/stats.js")),
    ("timeline.js", JS, include_str!("../assets/timeline.js")),
    ("trace.js", JS, include_str!("../assets/trace.js")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../assets/style.css"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = include_str!("../assets/index.html");

/// Scripts and styles from this origin only; no inline script, no plugins, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Routes of the viewer's pages and static assets. Stateless; merge into the query server.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/search", get(index))
        .route("/compare", get(index))
        .route("/dependencies", get(index))
        .route("/compare/{a}", get(index))
        .route("/compare/{a}/{b}", get(index))
        .route("/trace/{id}", get(index))
        .route("/assets/{name}", get(asset))
}

fn with_headers(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The assets change with the binary; revalidating is cheap on loopback.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> Response {
    with_headers("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ty, body)) => with_headers(ty, body),
        None => (StatusCode::NOT_FOUND, format!("no viewer asset {name:?}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str) -> Response {
        router()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_page_url_serves_the_app_with_a_strict_policy() {
        for path in [
            "/",
            "/search?service=x",
            "/trace/0af7651916cd43dd8448eb211c80319c",
            "/compare/a/b",
            "/dependencies?lookback=1d",
        ] {
            let r = get(path).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
            assert!(!csp.contains("unsafe-eval"));
            let body = to_bytes(r.into_body(), 1 << 20).await.unwrap();
            assert!(std::str::from_utf8(&body)
                .unwrap()
                .contains("/assets/app.js"));
        }
    }

    #[tokio::test]
    async fn every_module_the_scripts_import_is_served() {
        for (name, _, body) in ASSETS {
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .rsplit("from '")
                    .next()
                    .and_then(|s| s.split('\'').next())
                    .unwrap();
                let file = target.trim_start_matches("./");
                let r = get(&format!("/assets/{file}")).await;
                assert_eq!(r.status(), StatusCode::OK, "{name} imports {target}");
                assert_eq!(r.headers()[header::CONTENT_TYPE], JS);
            }
        }
    }

    /// The page names every module up front, so the browser fetches them side by side
    /// instead of discovering them one import level at a time before the trace is asked for.
    #[test]
    fn the_page_preloads_every_module() {
        for (name, ty, _) in ASSETS
            .iter()
            .filter(|(n, ty, _)| *ty == JS && *n != "app.js")
        {
            let link = format!("<link rel=\"modulepreload\" href=\"/assets/{name}\">");
            assert!(
                INDEX.contains(&link),
                "index.html does not preload {name} ({ty})"
            );
        }
    }

    #[tokio::test]
    async fn no_script_builds_markup_from_strings() {
        for (name, _, body) in ASSETS {
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!body.contains(bad), "{name} uses {bad}");
            }
        }
        assert_eq!(
            get("/assets/../Cargo.toml").await.status(),
            StatusCode::NOT_FOUND
        );
    }
}

//! The debugger page: events arriving live, in the browser, served by the binary itself.
//!
//! The page is static: it holds no data and no token. It reads the admin token from the URL
//! fragment (`/#token=...`, which browsers never send to servers) or asks for it, keeps it in
//! `sessionStorage`, and calls the admin API with it. Every string from a payload reaches the
//! page through `textContent`, never as HTML.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("debugger.html");

/// The page's icon, also served at `/favicon.ico`, which browsers ask for on their own: a 404
/// there is an error in the console of every visit.
const ICON: &str = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><circle cx='8' cy='8' r='7' fill='#1d2330'/><circle cx='8' cy='8' r='3' fill='#3ddc84'/></svg>";

/// How long browsers may keep the icon: it changes only with the binary.
const ICON_CACHE: &str = "public, max-age=86400";

pub(crate) async fn icon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, ICON_CACHE),
        ],
        ICON,
    )
}

pub(crate) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // No inline script or style from anywhere else; the page talks to this server only.
            // No page may frame it (`frame-ancestors`, and `X-Frame-Options` for browsers
            // without CSP 2): framed, a page of another site could overlay it to click through
            // the operator's session (clickjacking, e.g. a replay).
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}

//! The web app: one page, a stylesheet and a script, compiled into the binary (the appliance
//! is offline: nothing is fetched from anywhere else). Plain HTML, CSS and JavaScript, no
//! framework: the app is four views over the JSON API, and without a build step the binary's
//! source is the whole of it.

use super::Service;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/app.css");

/// The page and its two assets, each at one fixed path: no route reads a file by name.
pub fn routes() -> Router<Arc<Service>> {
    let asset = |body: &'static str, kind: &'static str| {
        get(move || async move { ([(header::CONTENT_TYPE, kind)], body).into_response() })
    };
    Router::new()
        .route("/", asset(INDEX, "text/html; charset=utf-8"))
        .route("/app.js", asset(SCRIPT, "text/javascript; charset=utf-8"))
        .route("/app.css", asset(STYLE, "text/css; charset=utf-8"))
}

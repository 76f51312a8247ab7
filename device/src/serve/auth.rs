//! Who may ask the service, checked in front of every route.
//!
//! - With a token (`--token-file`), every request but the login page carries it: an
//!   `Authorization: Bearer TOKEN` header (scripts) or the `smoothface_token` cookie that the
//!   login form sets (browsers; HttpOnly, SameSite=Strict). Tokens are compared in constant time.
//! - Without one (loopback only), requests must name a loopback host: a web page elsewhere that
//!   rebinds its own name to 127.0.0.1 is refused.
//! - A request that changes something and comes from another origin (a page elsewhere posting a
//!   form at the service) is refused, token or not.
//!
//! Every answer carries headers that keep the page to its own assets (a content security policy
//! without inline scripts), out of frames, and its faces out of shared caches.

use super::Service;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The cookie the login form sets.
pub const COOKIE: &str = "smoothface_token";

/// The login routes: the form, and the post that checks the token.
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
}

/// The guard in front of every route (see the module's documentation).
pub async fn guard(State(s): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let path = req.uri().path().to_string();
    // No token: only loopback names are answered (the guard against DNS rebinding).
    let refused = if s.config.token.is_none() && !loopback_host(headers) {
        Some(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this service answers only to localhost, 127.0.0.1 or [::1] (it has no token); \
             start it with --token-file to reach it by another name",
        ))
    } else if changes_something(req.method()) && !same_origin(headers) {
        Some(refuse(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: changes are accepted only from the service's own page",
        ))
    } else if let Some(token) = &s.config.token {
        let open = path == "/login" || path == "/app.css";
        if open || carries(headers, token) {
            None
        } else if path.starts_with("/api/") {
            Some(refuse(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send `Authorization: Bearer TOKEN`, or log in at /login",
            ))
        } else {
            Some(Redirect::to("/login").into_response())
        }
    } else {
        None
    };
    let mut response = match refused {
        Some(r) => r,
        None => next.run(req).await,
    };
    protect(response.headers_mut());
    response
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn changes_something(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The Host header names a loopback address (with or without a port).
fn loopback_host(h: &HeaderMap) -> bool {
    let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/1.0 without a Host: not a browser.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    matches!(
        name.to_ascii_lowercase().as_str(),
        "localhost" | "127.0.0.1" | "::1"
    )
}

/// No Origin (not a browser, or a same-origin navigation) or an Origin whose host is the Host.
fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// The request carries the token as a bearer header or as the login cookie.
fn carries(h: &HeaderMap, token: &str) -> bool {
    let matches = |given: &str| same_token(given, token);
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| matches(t.trim()));
    bearer
        || h.get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(cookie::Cookie::split_parse)
            .flatten()
            .any(|c| c.name() == COOKIE && matches(c.value()))
}

/// The one comparison of a given token with the service's, in constant time.
fn same_token(given: &str, token: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

fn protect(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; \
         frame-ancestors 'none'; form-action 'self'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::CACHE_CONTROL, "no-store");
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login_page() -> Html<String> {
    Html(login_html(""))
}

async fn login(State(s): State<Arc<Service>>, Form(form): Form<Login>) -> Response {
    let Some(token) = &s.config.token else {
        return Redirect::to("/").into_response();
    };
    if !same_token(form.token.trim(), token) {
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_html("That is not the service's token.")),
        )
            .into_response();
    }
    let cookie = cookie::Cookie::build((COOKIE, token.clone()))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .build();
    (
        [(header::SET_COOKIE, cookie.to_string())],
        Redirect::to("/"),
    )
        .into_response()
}

async fn logout() -> Response {
    let gone = cookie::Cookie::build((COOKIE, ""))
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .build();
    (
        [(header::SET_COOKIE, gone.to_string())],
        Redirect::to("/login"),
    )
        .into_response()
}

fn login_html(message: &str) -> String {
    let message = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\">{message}</p>")
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Smoothface: log in</title><link rel=\"stylesheet\" href=\"/app.css\"></head>\
         <body><main class=\"login\"><h1>Smoothface</h1>{message}\
         <form method=\"post\" action=\"/login\"><label>Token \
         <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus></label>\
         <button type=\"submit\">Log in</button></form>\
         <p>The token is the first line of the file given to <code>smoothface serve --token-file</code>.</p>\
         </main></body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_loopback_names_pass_the_rebinding_guard() {
        for ok in ["localhost:8080", "127.0.0.1", "[::1]:8080", "LOCALHOST"] {
            assert!(loopback_host(&headers(&[(header::HOST, ok)])), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "192.168.1.2:8080",
        ] {
            assert!(!loopback_host(&headers(&[(header::HOST, bad)])), "{bad}");
        }
    }

    #[test]
    fn an_origin_must_be_the_host() {
        let h = |o: &str| headers(&[(header::HOST, "127.0.0.1:8080"), (header::ORIGIN, o)]);
        assert!(same_origin(&h("http://127.0.0.1:8080")));
        assert!(!same_origin(&h("http://evil.example")));
        assert!(!same_origin(&h("null")));
        assert!(same_origin(&headers(&[(header::HOST, "127.0.0.1:8080")])));
    }

    #[test]
    fn the_token_is_taken_from_a_bearer_header_or_the_cookie() {
        let t = "0123456789abcdef";
        assert!(carries(
            &headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef")]),
            t
        ));
        assert!(!carries(
            &headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdeX")]),
            t
        ));
        assert!(!carries(
            &headers(&[(header::AUTHORIZATION, "0123456789abcdef")]),
            t
        ));
        assert!(carries(
            &headers(&[(header::COOKIE, "a=b; smoothface_token=0123456789abcdef")]),
            t
        ));
        assert!(!carries(
            &headers(&[(header::COOKIE, "smoothface_token=nope")]),
            t
        ));
        assert!(!carries(&HeaderMap::new(), t));
    }
}

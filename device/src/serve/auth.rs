//! Who may ask the service, checked in front of every route.
//!
//! - With a token file (`--token-file`), every request but the login form carries the token or
//!   a session: an `Authorization: Bearer TOKEN` header (scripts), or the `smoothface_session`
//!   cookie that the login form sets (browsers; HttpOnly, SameSite=Strict). The cookie holds a
//!   random session id that the service keeps, never the token: a session ends at logout, after
//!   [`SESSION_LIFETIME`], or when the token file changes in any way (each request looks at the
//!   file, so a new token needs no restart, and `touch` ends every session). Tokens are compared
//!   in constant time. A wrong token at the login form makes the next attempt from the same
//!   address (an IPv6 client's /64) wait [`LOGIN_DELAY`], doubling with each further wrong
//!   token up to [`LOGIN_DELAY_MAX`]; an attempt before then is answered 429 without being
//!   checked.
//! - Without one (loopback only), requests must name a loopback host: a web page elsewhere that
//!   rebinds its own name to 127.0.0.1 is refused.
//! - A request that changes something and comes from another origin (a page elsewhere posting a
//!   form at the service, or the same host by another scheme) is refused, token or not.
//!
//! Every answer carries headers that keep the page to its own assets (a content security policy
//! without inline scripts), out of frames, its faces out of shared caches and out of other
//! sites' pages (Cross-Origin-Resource-Policy).

use super::{read_token, Service};
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use subtle::ConstantTimeEq;

/// The cookie the login form sets: a session id.
pub const COOKIE: &str = "smoothface_session";

/// How long a session lasts from its login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Sessions kept at once; a login beyond them ends the one closest to its end.
const MAX_SESSIONS: usize = 1024;

/// The wait after the first wrong token from an address; it doubles with each further one.
pub const LOGIN_DELAY: Duration = Duration::from_secs(1);

/// The longest wait between two login attempts from an address.
pub const LOGIN_DELAY_MAX: Duration = Duration::from_secs(60);

/// Wrong tokens are forgotten this long after the wait they caused is over.
const LOGIN_FORGET: Duration = Duration::from_secs(15 * 60);

/// Addresses whose wrong tokens are remembered one by one; beyond them, new addresses share
/// one count (memory stays bounded whatever the number of addresses).
const LOGIN_TRACKED: usize = 4096;

/// The login routes: the form, the post that checks the token, and the logout.
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
}

/// The token of `--token-file` and the sessions opened with it.
pub struct Access {
    file: PathBuf,
    current: Mutex<Current>,
    attempts: Mutex<HashMap<Option<IpAddr>, Failures>>,
}

/// The token as the file last gave it, and the sessions opened since.
struct Current {
    /// `None` while the file cannot be read or holds no valid token: everything is refused.
    token: Option<String>,
    stamp: Option<Stamp>,
    /// The SHA-256 of each session id (a lookup then takes the same time whatever the id
    /// given), with its end.
    sessions: HashMap<[u8; 32], Instant>,
}

/// What the token file looked like when read: a new token, or a `touch`, changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
    #[cfg(unix)]
    changed: (i64, i64),
}

impl Stamp {
    /// The file's stamp; `None` when it cannot be looked at (gone, or its folder unreadable).
    fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Some(Stamp {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            inode: (m.dev(), m.ino()),
            #[cfg(unix)]
            changed: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Wrong tokens from one address: how many in a row, and when the last came.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// When the next attempt is heard.
    fn ready(&self) -> Instant {
        self.last + login_delay(self.count)
    }
}

/// The wait after `failures` wrong tokens in a row: [`LOGIN_DELAY`] doubled for each after the
/// first, at most [`LOGIN_DELAY_MAX`].
fn login_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    LOGIN_DELAY
        .saturating_mul(1 << doublings)
        .min(LOGIN_DELAY_MAX)
}

/// The address whose wrong tokens are counted together: an IPv4 address (IPv4-mapped ones as
/// IPv4), or an IPv6 address's /64, the block one client is usually given.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        },
        v4 => v4,
    }
}

/// Why a login was refused.
#[derive(Debug)]
enum LoginRefused {
    /// Not the token; the next attempt waits this long.
    Wrong(Duration),
    /// Too soon after a wrong token: try again in this long.
    TooSoon(Duration),
    /// The operating system gave no random bytes for a session id.
    NoRandom(getrandom::Error),
}

impl Access {
    /// Reads the token file (see [`read_token`]) and starts with no session.
    pub fn open(file: &Path) -> anyhow::Result<Access> {
        let stamp = Stamp::of(file);
        let token = read_token(file)?;
        Ok(Access {
            file: file.to_path_buf(),
            current: Mutex::new(Current {
                token: Some(token),
                stamp,
                sessions: HashMap::new(),
            }),
            attempts: Mutex::new(HashMap::new()),
        })
    }

    /// The token and sessions, after a look at the file: when it changed, every session ends
    /// and the token is read again.
    fn current(&self) -> MutexGuard<'_, Current> {
        let mut current = self.current.lock().expect("not poisoned");
        let stamp = Stamp::of(&self.file);
        if stamp != current.stamp {
            current.sessions.clear();
            current.stamp = stamp;
            current.token = match read_token(&self.file) {
                Ok(token) => Some(token),
                Err(e) => {
                    eprintln!(
                        "smoothface serve: {e:#}; every request is refused until the token file \
                         is fixed"
                    );
                    None
                }
            };
        }
        current
    }

    /// The request carries the token as a bearer header, or a live session's cookie.
    fn admits(&self, h: &HeaderMap) -> bool {
        let now = Instant::now();
        let mut current = self.current();
        let by_token = bearer(h)
            .zip(current.token.as_deref())
            .is_some_and(|(given, token)| same_token(given, token));
        by_token || session_ids(h).any(|id| current.live(id, now))
    }

    /// Checks a token given at the login form from `from` (`None`: not known) and opens a
    /// session for it: its id, for the cookie.
    fn log_in(
        &self,
        from: Option<IpAddr>,
        given: &str,
        now: Instant,
    ) -> Result<String, LoginRefused> {
        let mut key = from.map(client_key);
        let mut attempts = self.attempts.lock().expect("not poisoned");
        if let Some(failures) = attempts.get(&key) {
            if now < failures.ready() {
                return Err(LoginRefused::TooSoon(failures.ready() - now));
            }
        }
        let mut current = self.current();
        if current
            .token
            .as_deref()
            .is_some_and(|token| same_token(given, token))
        {
            attempts.remove(&key);
            return current.open_session(now).map_err(LoginRefused::NoRandom);
        }
        drop(current);
        if attempts.len() >= LOGIN_TRACKED {
            attempts.retain(|_, f| now < f.ready() + LOGIN_FORGET);
            if attempts.len() >= LOGIN_TRACKED && !attempts.contains_key(&key) {
                key = None;
            }
        }
        let failures = attempts.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now >= failures.ready() + LOGIN_FORGET {
            failures.count = 0; // long ago: counted afresh
        }
        failures.count += 1;
        failures.last = now;
        Err(LoginRefused::Wrong(login_delay(failures.count)))
    }

    /// Ends the sessions whose cookies the request carries.
    fn log_out(&self, h: &HeaderMap) {
        let mut current = self.current();
        for id in session_ids(h) {
            current.sessions.remove(&digest(id));
        }
    }
}

impl Current {
    /// A new session: a random id of 256 bits from the operating system's CSPRNG.
    fn open_session(&mut self, now: Instant) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let id = hex::encode(bytes);
        self.sessions.retain(|_, end| now < *end);
        if self.sessions.len() >= MAX_SESSIONS {
            if let Some(first) = self
                .sessions
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(k, _)| *k)
            {
                self.sessions.remove(&first);
            }
        }
        self.sessions.insert(digest(&id), now + SESSION_LIFETIME);
        Ok(id)
    }

    /// The session is open and not over (an ended one is forgotten).
    fn live(&mut self, id: &str, now: Instant) -> bool {
        let key = digest(id);
        match self.sessions.get(&key) {
            Some(end) if now < *end => true,
            Some(_) => {
                self.sessions.remove(&key);
                false
            }
            None => false,
        }
    }
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The guard in front of every route (see the module's documentation).
pub async fn guard(State(s): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let path = req.uri().path();
    // No token: only loopback names are answered (the guard against DNS rebinding).
    let refused = if s.access.is_none() && !loopback_host(headers) {
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
    } else if let Some(access) = &s.access {
        // The login form and its style sheet are for everyone; logging out ends only the
        // session the request names.
        let open = matches!(path, "/login" | "/logout" | "/app.css");
        if open || access.admits(headers) {
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

/// The request's one Host header, as text; `None` when it has none, several, or one that is not
/// text.
fn host(h: &HeaderMap) -> Option<&str> {
    let mut all = h.get_all(header::HOST).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    }
}

/// The name in a Host header, which must be an authority and nothing more: a name (letters,
/// digits, `-`, `_`, `.`) or an IPv4 address, or an IPv6 address in brackets, then an optional
/// `:port`. `None` for anything else (`[::1]evil.example`, `a:b:c`, an empty port).
fn host_name(host: &str) -> Option<&str> {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            ip.parse::<Ipv6Addr>().ok()?;
            match after {
                "" => (ip, None),
                _ => (ip, Some(after.strip_prefix(':')?)),
            }
        }
        None => {
            let (name, port) = match host.split_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (host, None),
            };
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            (name_ok.then_some(name)?, port)
        }
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    port_ok.then_some(name)
}

/// The Host header names a loopback address (with or without a port): `localhost`, or an
/// address of 127.0.0.0/8 or ::1.
fn loopback_host(h: &HeaderMap) -> bool {
    if h.get(header::HOST).is_none() {
        // HTTP/1.0 without a Host: not a browser.
        return true;
    }
    host(h).and_then(host_name).is_some_and(|name| {
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    })
}

/// No Origin (not a browser, or a same-origin navigation) or the origin of the service's own
/// pages: `http://` (it speaks nothing else) and the Host, which must be well formed.
fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (origin.to_str(), host(h).filter(|v| host_name(v).is_some()))
    else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The session ids of the request's login cookies.
fn session_ids(h: &HeaderMap) -> impl Iterator<Item = &str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The one comparison of a given token with the service's, in constant time.
fn same_token(given: &str, token: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

fn protect(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, name: HeaderName, value: &'static str| {
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
    // Crops and thumbnails are faces: no other site's page may show them (an <img> there would
    // send the login cookie were it not SameSite, and a token in the URL never works).
    set(
        h,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login_page() -> Html<String> {
    Html(login_html(""))
}

async fn login(State(s): State<Arc<Service>>, req: Request) -> Response {
    let Some(access) = &s.access else {
        return Redirect::to("/").into_response();
    };
    let from = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let form = match Form::<Login>::from_request(req, &s).await {
        Ok(Form(form)) => form,
        Err(e) => return e.into_response(),
    };
    let id = match access.log_in(from, form.token.trim(), Instant::now()) {
        Ok(id) => id,
        Err(LoginRefused::Wrong(wait)) => {
            let message = format!(
                "That is not the service's token. The next attempt from this address is heard \
                 after {} s.",
                wait.as_secs()
            );
            return (StatusCode::UNAUTHORIZED, Html(login_html(&message))).into_response();
        }
        Err(LoginRefused::TooSoon(wait)) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let message = format!("Too many wrong tokens: try again in {seconds} s.");
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, seconds.to_string())],
                Html(login_html(&message)),
            )
                .into_response();
        }
        Err(LoginRefused::NoRandom(e)) => {
            eprintln!("smoothface serve: no random bytes for a session id: {e}");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(login_html(
                    "The service could not open a session; try again.",
                )),
            )
                .into_response();
        }
    };
    let cookie = cookie::Cookie::build((COOKIE, id))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(
            SESSION_LIFETIME.as_secs() as i64
        ))
        .build();
    (
        [(header::SET_COOKIE, cookie.to_string())],
        Redirect::to("/"),
    )
        .into_response()
}

async fn logout(State(s): State<Arc<Service>>, headers: HeaderMap) -> Response {
    if let Some(access) = &s.access {
        access.log_out(&headers);
    }
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

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_loopback_names_pass_the_rebinding_guard() {
        for ok in [
            "localhost:8080",
            "127.0.0.1",
            "[::1]:8080",
            "[::1]",
            "LOCALHOST",
            "127.0.0.2:80",
        ] {
            assert!(loopback_host(&headers(&[(header::HOST, ok)])), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "192.168.1.2:8080",
            "[::1]evil.example",
            "[::1]:8080evil",
            "[::1]:",
            "localhost:",
            "localhost:80:80",
            "localhost:99999",
            "localhost evil.example",
            "[evil.example]",
            "",
        ] {
            assert!(!loopback_host(&headers(&[(header::HOST, bad)])), "{bad}");
        }
        let two = headers(&[(header::HOST, "localhost"), (header::HOST, "evil.example")]);
        assert!(!loopback_host(&two), "two Host headers");
    }

    #[test]
    fn an_origin_must_be_the_host_over_http() {
        let h = |o: &str| headers(&[(header::HOST, "127.0.0.1:8080"), (header::ORIGIN, o)]);
        assert!(same_origin(&h("http://127.0.0.1:8080")));
        assert!(!same_origin(&h("https://127.0.0.1:8080")), "another scheme");
        assert!(!same_origin(&h("ws://127.0.0.1:8080")));
        assert!(!same_origin(&h("http://127.0.0.1:8081")));
        assert!(!same_origin(&h("http://evil.example")));
        assert!(!same_origin(&h("null")));
        assert!(same_origin(&headers(&[(header::HOST, "127.0.0.1:8080")])));
        let odd = headers(&[
            (header::HOST, "[::1]evil.example"),
            (header::ORIGIN, "http://[::1]evil.example"),
        ]);
        assert!(!same_origin(&odd), "a malformed Host matches nothing");
    }

    fn access(dir: &Path, token: &str) -> Access {
        let file = dir.join("token");
        write_token(&file, token);
        Access::open(&file).unwrap()
    }

    fn write_token(file: &Path, token: &str) {
        std::fs::write(file, format!("{token}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    fn with_cookie(id: &str) -> HeaderMap {
        headers(&[(header::COOKIE, &format!("a=b; {COOKIE}={id}"))])
    }

    const TOKEN: &str = "0123456789abcdef-token";

    #[test]
    fn the_token_is_taken_from_a_bearer_header_and_a_session_from_the_cookie() {
        let dir = tempfile::tempdir().unwrap();
        let a = access(dir.path(), TOKEN);
        let bearer = |t: &str| headers(&[(header::AUTHORIZATION, &format!("Bearer {t}"))]);
        assert!(a.admits(&bearer(TOKEN)));
        assert!(!a.admits(&bearer("0123456789abcdef-tokeX")));
        assert!(!a.admits(&headers(&[(header::AUTHORIZATION, TOKEN)])));
        assert!(!a.admits(&with_cookie(TOKEN)), "the token is no session id");
        assert!(!a.admits(&HeaderMap::new()));
        let id = a.log_in(None, TOKEN, Instant::now()).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, a.log_in(None, TOKEN, Instant::now()).unwrap());
        assert!(a.admits(&with_cookie(&id)));
        assert!(!a.admits(&with_cookie(&id[..63])));
        a.log_out(&with_cookie(&id));
        assert!(!a.admits(&with_cookie(&id)), "logged out");
    }

    #[test]
    fn sessions_end_with_their_lifetime_and_when_the_token_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let a = access(dir.path(), TOKEN);
        let now = Instant::now();
        let id = a.log_in(None, TOKEN, now).unwrap();
        let mut current = a.current();
        assert!(current.live(&id, now + SESSION_LIFETIME - Duration::from_secs(1)));
        assert!(!current.live(&id, now + SESSION_LIFETIME));
        assert!(!current.live(&id, now), "an ended session is forgotten");
        drop(current);
        let id = a.log_in(None, TOKEN, now).unwrap();
        // The same token written again (or touched) still ends every session.
        std::thread::sleep(Duration::from_millis(20));
        write_token(&dir.path().join("token"), TOKEN);
        assert!(!a.admits(&with_cookie(&id)));
        let bearer = headers(&[(header::AUTHORIZATION, &format!("Bearer {TOKEN}"))]);
        assert!(a.admits(&bearer));
        // A new token is the only one heard from then on; an unreadable file refuses all.
        let new = "fedcba9876543210-new-token";
        write_token(&dir.path().join("token"), new);
        assert!(!a.admits(&bearer));
        assert!(a.admits(&headers(&[(
            header::AUTHORIZATION,
            &format!("Bearer {new}")
        )])));
        std::fs::remove_file(dir.path().join("token")).unwrap();
        assert!(!a.admits(&headers(&[(
            header::AUTHORIZATION,
            &format!("Bearer {new}")
        )])));
        assert!(matches!(
            a.log_in(None, new, Instant::now()),
            Err(LoginRefused::Wrong(_))
        ));
    }

    #[test]
    fn wrong_tokens_make_the_next_attempt_from_that_address_wait_longer_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let a = access(dir.path(), TOKEN);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (me, other): (IpAddr, IpAddr) =
            ("192.168.1.9".parse().unwrap(), "10.0.0.1".parse().unwrap());
        let wait = |r: Result<String, LoginRefused>| match r {
            Err(LoginRefused::Wrong(d)) => ("wrong", d.as_secs()),
            Err(LoginRefused::TooSoon(d)) => ("soon", d.as_secs()),
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(a.log_in(Some(me), "guess-1", at(0))), ("wrong", 1));
        assert_eq!(
            wait(a.log_in(Some(me), TOKEN, at(0))),
            ("soon", 1),
            "even the token waits"
        );
        assert_eq!(wait(a.log_in(Some(me), "guess-2", at(1))), ("wrong", 2));
        assert_eq!(wait(a.log_in(Some(me), "guess-3", at(3))), ("wrong", 4));
        assert_eq!(wait(a.log_in(Some(me), "guess-4", at(5))), ("soon", 2));
        // Another address is not held up; the right token after the wait resets the count.
        assert!(a.log_in(Some(other), TOKEN, at(5)).is_ok());
        assert!(a.log_in(Some(me), TOKEN, at(7)).is_ok());
        assert_eq!(wait(a.log_in(Some(me), "guess-5", at(7))), ("wrong", 1));
        // The wait stops growing at the maximum, and a /64 is one client.
        let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let mut t = 100;
        for _ in 0..12 {
            let (_, d) = wait(a.log_in(v6("2001:db8::1"), "guess", at(t)));
            t += d;
        }
        assert_eq!(login_delay(12), LOGIN_DELAY_MAX);
        assert_eq!(
            wait(a.log_in(v6("2001:db8::ffff"), TOKEN, at(t - 1))).0,
            "soon"
        );
        assert!(a.log_in(v6("2001:db9::1"), TOKEN, at(t - 1)).is_ok());
    }
}

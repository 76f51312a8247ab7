//! The JSON API (every route is listed in docs/api.md).
//!
//! Handlers are thin: the gallery, people and thumbnail modules do the work, on tokio's blocking
//! threads. Errors are JSON `{"error": "..."}` with a 4xx status saying whose fault it is; a 500
//! means a bug or a broken gallery, never a bad request, and says only that: its cause (an SQL
//! error, a path) goes to the service's standard error, not to the client.

use super::Service;
use crate::gallery::db;
use crate::gallery::search::Hit;
use crate::media::DecodeError;
use crate::people::decisions::{self, Decided, Refused};
use crate::people::fusion::Fusion;
use crate::people::store as people_store;
use crate::people::suggest;
use crate::thumbs::ThumbError;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// Results of a search unless `?top=` says otherwise.
pub const DEFAULT_TOP: usize = 20;

/// An error answer: a status and a sentence.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        // The gallery busy past SQLite's busy timeout (a long write beside the service): the
        // request may simply be tried again.
        let busy = e.chain().any(|cause| {
            cause
                .downcast_ref::<rusqlite::Error>()
                .and_then(rusqlite::Error::sqlite_error_code)
                .is_some_and(|code| {
                    matches!(
                        code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    )
                })
        });
        if busy {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the gallery is busy with another change: try again in a moment",
            );
        }
        eprintln!("smoothface serve: {e:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the service failed to answer (its log says why)",
        )
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> ApiError {
        anyhow::Error::from(e).into()
    }
}

impl From<ThumbError> for ApiError {
    fn from(e: ThumbError) -> ApiError {
        match e {
            ThumbError::NotFound(m) => ApiError::not_found(m),
            ThumbError::Unreadable(m) => ApiError::new(StatusCode::CONFLICT, m),
            ThumbError::Internal(e) => e.into(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, e.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        ApiError::new(e.status(), e.body_text())
    }
}

/// A decision the user asked for was refused: a person or face not in the gallery is 404, one
/// the gallery no longer has as the request expects (what the loser of two decisions at once
/// gets) 409, a request that cannot be done 400. Any other error is the service's (500).
fn refused(e: anyhow::Error) -> ApiError {
    let status = match e.downcast_ref::<Refused>() {
        Some(Refused::NotFound(_)) => StatusCode::NOT_FOUND,
        Some(Refused::Conflict(_)) => StatusCode::CONFLICT,
        Some(Refused::Invalid(_)) => StatusCode::BAD_REQUEST,
        None => return e.into(),
    };
    ApiError::new(status, e.to_string())
}

type Answer = Result<Json<Value>, ApiError>;

/// A row id from the path: anything but a whole number is a 404 naming it.
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Id, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found("no such item"))?;
        raw.parse()
            .map(Id)
            .map_err(|_| ApiError::not_found(format!("no item {raw:?}: ids are whole numbers")))
    }
}

/// A JSON body; a malformed one is a JSON 4xx saying what is wrong.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Body<T>, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state)
            .await
            .map_err(|e| match &e {
                JsonRejection::BytesRejection(b) if stalled(b) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request's body stalled: its bytes stopped coming before its end",
                ),
                _ => ApiError::from(e),
            })?;
        Ok(Body(value))
    }
}

/// Query parameters; bad ones are a JSON 400 naming the parameter.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params<T>, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Params(value))
    }
}

/// Runs gallery work on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::from(anyhow::anyhow!("the request's worker failed: {e}")))?
}

/// The API's routes.
pub fn routes(max_upload: usize) -> Router<Arc<Service>> {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/stats", get(stats))
        .route("/api/index", get(index_status).post(index_now))
        .route("/api/media", get(media_list))
        .route("/api/media/{id}", get(media_one))
        .route("/api/media/{id}/thumbnail", get(thumbnail))
        .route("/api/faces/{id}/crop", get(face_crop))
        .route("/api/faces/{id}/move", post(move_face))
        .route(
            "/api/search",
            post(search_upload).layer(DefaultBodyLimit::max(max_upload)),
        )
        .route("/api/search/face/{id}", get(search_face))
        .route("/api/search/person/{id}", get(search_person))
        .route("/api/people", get(people_list))
        .route("/api/people/undo", post(undo))
        .route("/api/people/suggestions", get(suggestions))
        .route("/api/people/{id}", get(person))
        .route("/api/people/{id}/name", post(name))
        .route("/api/people/{id}/merge", post(merge))
        .route("/api/people/{id}/split", post(split))
        .route("/api/people/{id}/reject", post(reject))
        .route("/api/people/{id}/keep-apart", post(keep_apart))
        .route("/api/forget", post(forget))
        .fallback(|| async { ApiError::not_found("no such route (docs/api.md lists them)") })
}

async fn status(State(s): State<Arc<Service>>) -> Answer {
    let index = s.indexer.status();
    let svc = s.clone();
    let (faces, media, people) = blocking(move || {
        let conn = svc.connection()?;
        let of_model = |sql: &str| -> Result<i64, ApiError> {
            Ok(conn.query_row(sql, [svc.model_id], |r| r.get(0))?)
        };
        let media: i64 =
            conn.query_row("SELECT count(*) FROM media WHERE status = 'ok'", [], |r| {
                r.get(0)
            })?;
        Ok((
            of_model("SELECT count(*) FROM faces WHERE model_id = ?1")?,
            media,
            of_model("SELECT count(*) FROM people WHERE model_id = ?1")?,
        ))
    })
    .await?;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "model": s.pipeline.embedder.name,
        "faces": faces,
        "media": media,
        "people": people,
        "token": s.access.is_some(),
        "index": index,
    })))
}

async fn stats(State(s): State<Arc<Service>>) -> Answer {
    blocking(move || {
        let conn = s.connection()?;
        Ok(Json(
            serde_json::to_value(db::stats(&conn, &s.config.db)?).map_err(anyhow::Error::from)?,
        ))
    })
    .await
}

async fn index_status(State(s): State<Arc<Service>>) -> Answer {
    Ok(Json(
        serde_json::to_value(s.indexer.status()).map_err(anyhow::Error::from)?,
    ))
}

async fn index_now(State(s): State<Arc<Service>>) -> Result<Response, ApiError> {
    if !s.indexer.request() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "nothing to index: start the service with --library DIR",
        ));
    }
    let status = serde_json::to_value(s.indexer.status()).map_err(anyhow::Error::from)?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

#[derive(Deserialize)]
struct Page {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// What the grid shows of a media row.
const MEDIA_COLUMNS: &str = "m.id, m.path, m.duration_s, m.mtime_ns,
    (SELECT count(*) FROM faces f WHERE f.media_id = m.id AND f.model_id = ?1),
    m.duration_s IS NOT NULL OR EXISTS (SELECT 1 FROM faces f WHERE f.media_id = m.id AND f.start_s IS NOT NULL)";

fn media_json(r: &rusqlite::Row) -> rusqlite::Result<Value> {
    let video: bool = r.get(5)?;
    Ok(json!({
        "id": r.get::<_, i64>(0)?,
        "path": r.get::<_, String>(1)?,
        "kind": if video { "video" } else { "photo" },
        "duration_s": r.get::<_, Option<f64>>(2)?,
        "mtime": r.get::<_, i64>(3)? as f64 / 1e9,
        "faces": r.get::<_, i64>(4)?,
    }))
}

/// `GET /api/media?offset=&limit=`: the gallery's readable photos and videos, newest first.
async fn media_list(State(s): State<Arc<Service>>, Params(q): Params<Page>) -> Answer {
    let (offset, limit) = (q.offset.unwrap_or(0), q.limit.unwrap_or(60).min(500));
    blocking(move || {
        let conn = s.connection()?;
        let total: i64 =
            conn.query_row("SELECT count(*) FROM media WHERE status = 'ok'", [], |r| {
                r.get(0)
            })?;
        let media: Vec<Value> = conn
            .prepare(&format!(
                "SELECT {MEDIA_COLUMNS} FROM media m WHERE m.status = 'ok'
                 ORDER BY m.mtime_ns DESC, m.id DESC LIMIT ?2 OFFSET ?3"
            ))?
            .query_map(params![s.model_id, limit as i64, offset as i64], media_json)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Json(
            json!({ "total": total, "offset": offset, "media": media }),
        ))
    })
    .await
}

/// `GET /api/media/ID`: one photo or video with its faces.
async fn media_one(State(s): State<Arc<Service>>, Id(id): Id) -> Answer {
    blocking(move || {
        let conn = s.connection()?;
        let mut media = conn
            .query_row(
                &format!("SELECT {MEDIA_COLUMNS} FROM media m WHERE m.id = ?2"),
                params![s.model_id, id],
                media_json,
            )
            .optional()?
            .ok_or_else(|| ApiError::not_found(format!("no media {id} in the gallery")))?;
        let faces: Vec<Value> = conn
            .prepare(
                "SELECT f.id, f.face_index, f.x1, f.y1, f.x2, f.y2, f.score, f.person_id, p.name,
                        f.start_s, f.end_s
                 FROM faces f LEFT JOIN people p ON p.id = f.person_id
                 WHERE f.media_id = ?1 AND f.model_id = ?2 ORDER BY f.face_index",
            )?
            .query_map(params![id, s.model_id], |r| {
                Ok(json!({
                    "id": r.get::<_, i64>(0)?,
                    "face_index": r.get::<_, i64>(1)?,
                    "box": [r.get::<_, f64>(2)?, r.get::<_, f64>(3)?, r.get::<_, f64>(4)?, r.get::<_, f64>(5)?],
                    "score": r.get::<_, f64>(6)?,
                    "person": r.get::<_, Option<i64>>(7)?,
                    "person_name": r.get::<_, Option<String>>(8)?,
                    "start_s": r.get::<_, Option<f64>>(9)?,
                    "end_s": r.get::<_, Option<f64>>(10)?,
                }))
            })?
            .collect::<rusqlite::Result<_>>()?;
        media["faces"] = Value::Array(faces);
        Ok(Json(media))
    })
    .await
}

#[derive(Deserialize)]
struct Size {
    size: Option<u32>,
}

fn jpeg(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            // The browser may keep it; nothing shared may (a face crop is biometric data).
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /api/media/ID/thumbnail?size=`: a JPEG, longest side 320 unless asked (160 to 1280).
async fn thumbnail(
    State(s): State<Arc<Service>>,
    Id(id): Id,
    Params(q): Params<Size>,
) -> Result<Response, ApiError> {
    blocking(move || {
        let conn = s.connection()?;
        let bytes = s
            .cache
            .thumbnail(&conn, id, q.size.unwrap_or(320), s.pipeline.max_pixels)?;
        Ok(jpeg(bytes))
    })
    .await
}

/// `GET /api/faces/ID/crop?size=`: a square JPEG of a face, 160 unless asked.
async fn face_crop(
    State(s): State<Arc<Service>>,
    Id(id): Id,
    Params(q): Params<Size>,
) -> Result<Response, ApiError> {
    blocking(move || {
        let conn = s.connection()?;
        let bytes = s
            .cache
            .face_crop(&conn, id, q.size.unwrap_or(160), s.pipeline.max_pixels)?;
        Ok(jpeg(bytes))
    })
    .await
}

#[derive(Deserialize)]
struct SearchQuery {
    face: Option<usize>,
    top: Option<usize>,
    min_score: Option<f32>,
    keep: Option<bool>,
}

impl SearchQuery {
    fn top(&self) -> usize {
        self.top.unwrap_or(DEFAULT_TOP)
    }

    fn min_score(&self) -> f32 {
        self.min_score.unwrap_or(-1.0)
    }
}

/// A ranked photo or video as the API gives it.
fn result_json(
    conn: &Connection,
    model_id: i64,
    media: i64,
    face_index: u32,
    score: f32,
) -> Result<Value, ApiError> {
    let mut stmt = conn.prepare_cached(
        "SELECT f.id, f.person_id, p.name, f.start_s, f.end_s, m.path, m.duration_s
         FROM faces f JOIN media m ON m.id = f.media_id LEFT JOIN people p ON p.id = f.person_id
         WHERE f.media_id = ?1 AND f.model_id = ?2 AND f.face_index = ?3",
    )?;
    Ok(stmt.query_row(params![media, model_id, face_index], |r| {
        let start: Option<f64> = r.get(3)?;
        let duration: Option<f64> = r.get(6)?;
        Ok(json!({
            "media": media,
            "path": r.get::<_, String>(5)?,
            "score": score,
            "face": r.get::<_, i64>(0)?,
            "face_index": face_index,
            "kind": if start.is_some() || duration.is_some() { "video" } else { "photo" },
            "start_s": start,
            "end_s": r.get::<_, Option<f64>>(4)?,
            "person": r.get::<_, Option<i64>>(1)?,
            "person_name": r.get::<_, Option<String>>(2)?,
        }))
    })?)
}

fn results_json(conn: &Connection, model_id: i64, hits: &[Hit]) -> Result<Vec<Value>, ApiError> {
    hits.iter()
        .map(|h| result_json(conn, model_id, h.media_id, h.face_index, h.score))
        .collect()
}

/// Why an upload could not be read, as a status: too many pixels is 413, not an image 415,
/// anything else about its bytes 400.
fn upload_error(e: DecodeError) -> ApiError {
    let status = match e {
        DecodeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        DecodeError::NotAnImage { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.to_string())
}

/// `POST /api/search?face=N&top=N&keep=true`, the photo as the body: the gallery ranked by its
/// face N (0, the largest, unless asked). The upload is analysed in memory and not stored,
/// unless `keep=true` asks to add it to the library.
async fn search_upload(
    State(s): State<Arc<Service>>,
    Params(q): Params<SearchQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the upload is over the limit of {} MB (serve --max-upload)",
                    s.config.max_upload / (1024 * 1024)
                ),
            )
        } else if stalled(&e) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the upload stalled: its bytes stopped coming before its end",
            )
        } else {
            ApiError::new(e.status(), e.body_text())
        }
    })?;
    let keep = q.keep.unwrap_or(false);
    if keep && s.config.libraries.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "nowhere to keep the upload: start the service with --library DIR",
        ));
    }
    let upload = body.clone();
    let permit = s
        .analysis
        .acquire()
        .await
        .map_err(|e| anyhow::anyhow!("the analysis queue closed: {e}"))?;
    let svc = s.clone();
    let faces = blocking(move || {
        let img = crate::media::decode_bytes(&body, Path::new("upload"), svc.pipeline.max_pixels)
            .map_err(upload_error)?;
        Ok(svc.pipeline.analyze(&img)?)
    })
    .await?;
    drop(permit);
    let pick = q.face.unwrap_or(0);
    let found: Vec<Value> = faces
        .iter()
        .map(|f| json!({ "box": f.face.bbox, "score": f.face.score }))
        .collect();
    let Some(query) = faces.get(pick) else {
        let message = if faces.is_empty() {
            "no face found in the upload".to_string()
        } else {
            format!("the upload has {} face(s), no face {pick}", faces.len())
        };
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message));
    };
    let embedding = query.embedding.clone();
    blocking(move || {
        let conn = s.connection()?;
        let (searched, results) = rank(&s, &conn, &embedding, &q)?;
        let kept = if keep {
            Some(keep_upload(&s, &upload)?)
        } else {
            None
        };
        Ok(Json(json!({
            "faces": found,
            "face": pick,
            "faces_searched": searched,
            "results": results,
            "kept": kept,
        })))
    })
    .await
}

/// The body stopped coming: tower-http's body timeout failed it (see [`super::conn`]).
fn stalled(e: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// `?keep=true`: the upload is written into the first library's `uploads/` folder, named by its
/// content hash (the same photo kept twice is one file), and an index run is asked for.
fn keep_upload(s: &Service, bytes: &[u8]) -> Result<std::path::PathBuf, ApiError> {
    use sha2::{Digest, Sha256};
    let library = &s.config.libraries[0];
    let ext = image::guess_format(bytes)
        .ok()
        .and_then(|f| f.extensions_str().first().copied())
        .unwrap_or("img");
    let name = format!("{}.{ext}", &hex::encode(Sha256::digest(bytes))[..16]);
    let path = library.join("uploads").join(name);
    if !path.exists() {
        smoothface_shared::atomic::write_atomically(&path, |f| std::io::Write::write_all(f, bytes))
            .map_err(|e| anyhow::anyhow!("{}: cannot keep the upload: {e}", path.display()))?;
    }
    s.indexer.request();
    Ok(path)
}

/// The gallery ranked by an embedding: how many faces were searched, and the results.
fn rank(
    s: &Arc<Service>,
    conn: &Connection,
    embedding: &[f32],
    q: &SearchQuery,
) -> Result<(usize, Vec<Value>), ApiError> {
    let matrix = s.matrix()?;
    let hits = matrix.rank_media(embedding, q.top(), q.min_score());
    Ok((matrix.len(), results_json(conn, s.model_id, &hits)?))
}

/// `GET /api/search/face/ID?top=N`: the gallery ranked by a face of the gallery.
async fn search_face(
    State(s): State<Arc<Service>>,
    Id(id): Id,
    Params(q): Params<SearchQuery>,
) -> Answer {
    blocking(move || {
        let conn = s.connection()?;
        let blob: Vec<u8> = conn
            .query_row(
                "SELECT embedding FROM faces WHERE id = ?1 AND model_id = ?2",
                params![id, s.model_id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| ApiError::not_found(format!("no face {id} in the gallery")))?;
        let embedding = db::floats(&blob, s.pipeline.embedder.dim(), id, "embedding")?;
        let (searched, results) = rank(&s, &conn, &embedding, &q)?;
        Ok(Json(json!({
            "face": id,
            "faces_searched": searched,
            "results": results,
        })))
    })
    .await
}

/// `GET /api/search/person/ID?top=N`: the person's photos first (`assigned`), then the `top`
/// best others: the "is this them too?" suggestions.
async fn search_person(
    State(s): State<Arc<Service>>,
    Id(id): Id,
    Params(q): Params<SearchQuery>,
) -> Answer {
    blocking(move || {
        let conn = s.connection()?;
        let id = decisions::resolve(&conn, s.model_id, &id.to_string()).map_err(refused)?;
        let matrix = s.matrix()?;
        let hits =
            people_store::rank_person(&conn, &matrix, id, Fusion::DEFAULT, q.top(), q.min_score())
                .map_err(refused)?;
        let results = hits
            .iter()
            .map(|(h, assigned)| {
                let mut r = result_json(&conn, s.model_id, h.media_id, h.face_index, h.score)?;
                r["assigned"] = json!(assigned);
                Ok(r)
            })
            .collect::<Result<Vec<Value>, ApiError>>()?;
        Ok(Json(json!({
            "person": id,
            "fusion": Fusion::DEFAULT.name(),
            "faces_searched": matrix.len(),
            "results": results,
        })))
    })
    .await
}

/// `GET /api/people`: every person, most faces first, with the face that stands for them.
async fn people_list(State(s): State<Arc<Service>>) -> Answer {
    blocking(move || {
        let conn = s.connection()?;
        let people = people_store::list(&conn, s.model_id)?;
        Ok(Json(json!({ "people": people })))
    })
    .await
}

/// `GET /api/people/ID`: a person and their faces.
async fn person(State(s): State<Arc<Service>>, Id(id): Id) -> Answer {
    blocking(move || {
        let conn = s.connection()?;
        let id = decisions::resolve(&conn, s.model_id, &id.to_string()).map_err(refused)?;
        let summary = people_store::summary(&conn, s.model_id, id)?
            .ok_or_else(|| ApiError::not_found(format!("no person {id} in the gallery")))?;
        let (faces, _) =
            people_store::faces(&conn, s.model_id, people_store::Whose::Person(id), false)?;
        let mut out = serde_json::to_value(summary).map_err(anyhow::Error::from)?;
        out["face_list"] = serde_json::to_value(faces).map_err(anyhow::Error::from)?;
        Ok(Json(out))
    })
    .await
}

#[derive(Deserialize)]
struct Top {
    top: Option<usize>,
}

/// `GET /api/people/suggestions?top=N`: pairs of people that may be one ("Same person?"), best
/// first (N: 20 by default, 0 for all): `a`, `b`, `score`, `a_face`, `b_face`.
async fn suggestions(State(s): State<Arc<Service>>, Params(q): Params<Top>) -> Answer {
    blocking(move || {
        let conn = s.connection()?;
        let pairs = suggest::for_gallery(&conn, s.model_id, q.top.unwrap_or(20))?;
        Ok(Json(json!({ "suggestions": pairs })))
    })
    .await
}

/// Runs a decision with a write connection and answers what it did.
async fn decide(
    s: Arc<Service>,
    f: impl FnOnce(&mut Connection, i64) -> anyhow::Result<Decided> + Send + 'static,
) -> Answer {
    blocking(move || {
        let mut conn = s.connection()?;
        let decided = f(&mut conn, s.model_id).map_err(refused)?;
        Ok(Json(
            serde_json::to_value(decided).map_err(anyhow::Error::from)?,
        ))
    })
    .await
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

#[derive(Deserialize)]
struct PeopleBody {
    others: Vec<i64>,
}

#[derive(Deserialize)]
struct FacesBody {
    faces: Vec<i64>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct PersonBody {
    person: i64,
}

#[derive(Deserialize)]
struct MediaBody {
    media: Vec<i64>,
}

/// `POST /api/people/ID/name {"name": "..."}`.
async fn name(State(s): State<Arc<Service>>, Id(id): Id, Body(b): Body<NameBody>) -> Answer {
    decide(s, move |c, m| {
        decisions::name(c, m, &id.to_string(), &b.name)
    })
    .await
}

/// `POST /api/people/ID/merge {"others": [ID, ...]}`: the others' faces go to ID.
async fn merge(State(s): State<Arc<Service>>, Id(id): Id, Body(b): Body<PeopleBody>) -> Answer {
    let others: Vec<String> = b.others.iter().map(i64::to_string).collect();
    decide(s, move |c, m| {
        decisions::merge(c, m, &id.to_string(), &others)
    })
    .await
}

/// `POST /api/people/ID/split {"faces": [ID, ...], "name": "..."}`.
async fn split(State(s): State<Arc<Service>>, Id(id): Id, Body(b): Body<FacesBody>) -> Answer {
    decide(s, move |c, m| {
        decisions::split(c, m, &id.to_string(), &b.faces, b.name.as_deref())
    })
    .await
}

/// `POST /api/people/ID/reject {"faces": [ID, ...]}`: these faces are not the person.
async fn reject(State(s): State<Arc<Service>>, Id(id): Id, Body(b): Body<FacesBody>) -> Answer {
    decide(s, move |c, m| {
        decisions::reject(c, m, &id.to_string(), &b.faces)
    })
    .await
}

/// `POST /api/people/ID/keep-apart {"other": ID}`: the two are different people.
async fn keep_apart(State(s): State<Arc<Service>>, Id(id): Id, Body(b): Body<OtherBody>) -> Answer {
    decide(s, move |c, m| {
        decisions::keep_apart(c, m, &id.to_string(), &b.other.to_string())
    })
    .await
}

#[derive(Deserialize)]
struct OtherBody {
    other: i64,
}

/// `POST /api/faces/ID/move {"person": ID}`: the face is that person ("yes, them too").
async fn move_face(State(s): State<Arc<Service>>, Id(id): Id, Body(b): Body<PersonBody>) -> Answer {
    decide(s, move |c, m| {
        decisions::move_face(c, m, id, &b.person.to_string())
    })
    .await
}

/// `POST /api/people/undo`: reverts the last decision.
async fn undo(State(s): State<Arc<Service>>) -> Answer {
    decide(s, decisions::undo).await
}

/// `POST /api/forget {"media": [ID, ...]}`: removes photos and videos from the gallery, with
/// their faces and cached images (the files themselves are not touched).
async fn forget(State(s): State<Arc<Service>>, Body(b): Body<MediaBody>) -> Answer {
    blocking(move || {
        let mut conn = s.connection()?;
        let mut paths = Vec::new();
        for id in &b.media {
            let path: Option<String> = conn
                .query_row("SELECT path FROM media WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            paths.push(
                path.ok_or_else(|| ApiError::not_found(format!("no media {id} in the gallery")))?
                    .into(),
            );
        }
        let r = db::forget(&mut conn, &paths)?;
        s.cache.sweep(&conn)?;
        Ok(Json(
            json!({ "media": r.photos, "faces": r.faces, "people": r.people }),
        ))
    })
    .await
}

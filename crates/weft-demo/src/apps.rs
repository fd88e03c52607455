//! The four applications' request handling.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::client::{CallError, Client};
use crate::{
    page, App, ReviewsVersion, Upstreams, APP_HEADER, PROPAGATED_HEADERS, RATINGS_TIMEOUT, UPSTREAM_TIMEOUT,
};

/// The book every id shows (the demo has one product, like Bookinfo).
pub(crate) const TITLE: &str = "The Tempest";
const REVIEWERS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "A storm, a shipwreck and an island full of noises: the last play he wrote alone, and it shows a master at ease.",
    ),
    (
        "Reviewer2",
        "Prospero's farewell to magic reads like a farewell to the stage. Short, strange and generous.",
    ),
];
const STARS: [u64; 2] = [5, 4];

pub(crate) struct State {
    app: App,
    app_id: HeaderValue,
    client: Client,
    podname: String,
}

impl State {
    pub(crate) fn new(app: App) -> State {
        let id = app.id();
        let app_id = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("weft-demo"));
        // Like a pod name: the workload `weft up` started us as, else the app id; the pid tells
        // replicas apart.
        let workload = std::env::var("WEFT_WORKLOAD")
            .ok()
            .filter(|w| !w.is_empty())
            .unwrap_or(id);
        let podname = format!("{workload}-{}", std::process::id());
        State {
            app,
            app_id,
            client: Client::new(32),
            podname,
        }
    }

    pub(crate) async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return self.text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        let path = req.uri().path().to_string();
        if path == "/health" {
            return self.json(StatusCode::OK, &json!({"status": "ok", "app": self.app.id()}));
        }
        match &self.app {
            App::ProductPage { upstreams } => self.product_page(upstreams, &req, &path).await,
            App::Details => match id_after(&path, "/details/") {
                Some(id) => self.json(StatusCode::OK, &details(id)),
                None => self.not_found(),
            },
            App::Reviews { version, upstreams } => match id_after(&path, "/reviews/") {
                Some(id) => {
                    let fwd = forwarded_headers(req.headers(), None);
                    let body = self.reviews(*version, upstreams, id, &fwd).await;
                    self.json(StatusCode::OK, &body)
                }
                None => self.not_found(),
            },
            App::Ratings => match id_after(&path, "/ratings/") {
                Some(id) => self.json(StatusCode::OK, &ratings(id)),
                None => self.not_found(),
            },
        }
    }

    async fn product_page<B>(
        &self,
        upstreams: &Upstreams,
        req: &Request<B>,
        path: &str,
    ) -> Response<Full<Bytes>> {
        let user = end_user(req);
        let fwd = forwarded_headers(req.headers(), user.as_deref());
        if path == "/" || path == "/productpage" {
            let (details, reviews) = self.fetch_product(upstreams, 0, &fwd).await;
            let html = page::render(user.as_deref(), &details, &reviews);
            return self.respond(StatusCode::OK, "text/html; charset=utf-8", html.into());
        }
        if path == "/api/v1/products" {
            return self.json(StatusCode::OK, &json!([{"id": 0, "title": TITLE}]));
        }
        let Some(id) = id_after(path, "/api/v1/products/") else {
            return self.not_found();
        };
        let (details, reviews) = self.fetch_product(upstreams, id, &fwd).await;
        let part = |r: &Result<(Value, HeaderMap), CallError>| match r {
            Ok((v, _)) => v.clone(),
            Err(e) => json!({"error": e.to_string()}),
        };
        self.json(
            StatusCode::OK,
            &json!({"id": id, "user": user, "details": part(&details), "reviews": part(&reviews)}),
        )
    }

    async fn fetch_product(
        &self,
        upstreams: &Upstreams,
        id: u32,
        fwd: &HeaderMap,
    ) -> (
        Result<(Value, HeaderMap), CallError>,
        Result<(Value, HeaderMap), CallError>,
    ) {
        let details_path = format!("/details/{id}");
        let reviews_path = format!("/reviews/{id}");
        let details = self.client.get_json(
            upstreams.details.as_deref(),
            "DETAILS_URL",
            &details_path,
            fwd,
            UPSTREAM_TIMEOUT,
        );
        let reviews = self.client.get_json(
            upstreams.reviews.as_deref(),
            "REVIEWS_URL",
            &reviews_path,
            fwd,
            UPSTREAM_TIMEOUT,
        );
        tokio::join!(details, reviews)
    }

    async fn reviews(
        &self,
        version: ReviewsVersion,
        upstreams: &Upstreams,
        id: u32,
        fwd: &HeaderMap,
    ) -> Value {
        let mut reviews: Vec<Value> = REVIEWERS
            .iter()
            .map(|(reviewer, text)| json!({"reviewer": reviewer, "text": text}))
            .collect();
        let mut body = json!({
            "id": id,
            "podname": self.podname,
            "version": version.as_str(),
        });
        if let Some(color) = version.star_color() {
            let got = self
                .client
                .get_json(
                    upstreams.ratings.as_deref(),
                    "RATINGS_URL",
                    &format!("/ratings/{id}"),
                    fwd,
                    RATINGS_TIMEOUT,
                )
                .await;
            match got {
                Ok((ratings, _)) => {
                    for r in &mut reviews {
                        let reviewer = r["reviewer"].as_str().unwrap_or_default().to_string();
                        r["rating"] = match ratings["ratings"][&reviewer].as_u64() {
                            Some(stars) => json!({"stars": stars.min(5), "color": color}),
                            None => json!({"error": "no rating for this reviewer"}),
                        };
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, "ratings call failed");
                    body["ratings"] = json!("unavailable");
                    body["ratings_error"] = json!(e.to_string());
                    for r in &mut reviews {
                        r["rating"] = json!({"error": "Ratings service is currently unavailable"});
                    }
                }
            }
        }
        body["reviews"] = Value::Array(reviews);
        body
    }

    fn json(&self, status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
        let body = serde_json::to_vec(v).unwrap_or_default();
        self.respond(status, "application/json", body.into())
    }

    fn text(&self, status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
        self.respond(
            status,
            "text/plain; charset=utf-8",
            Bytes::from_static(text.as_bytes()),
        )
    }

    fn not_found(&self) -> Response<Full<Bytes>> {
        self.text(StatusCode::NOT_FOUND, "not found\n")
    }

    fn respond(&self, status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp.headers_mut()
            .insert(HeaderName::from_static(APP_HEADER), self.app_id.clone());
        resp
    }
}

fn details(id: u32) -> Value {
    json!({
        "id": id,
        "title": TITLE,
        "author": "William Shakespeare",
        "year": 1611,
        "type": "paperback",
        "pages": 176,
        "publisher": "Weft Demo Press",
        "language": "English",
        "ISBN-10": "0000000000",
        "ISBN-13": "000-0000000000",
    })
}

fn ratings(id: u32) -> Value {
    let mut per = serde_json::Map::new();
    for ((reviewer, _), stars) in REVIEWERS.iter().zip(STARS) {
        per.insert((*reviewer).to_string(), json!(stars));
    }
    json!({"id": id, "ratings": per})
}

/// `/details/7` → 7; anything else (extra segments, not a number) → None.
fn id_after(path: &str, prefix: &str) -> Option<u32> {
    path.strip_prefix(prefix)?.parse().ok()
}

/// The user: `?u=NAME` (empty: nobody), else the `end-user` header, else an `end-user` cookie.
fn end_user<B>(req: &Request<B>) -> Option<String> {
    if let Some(query) = req.uri().query() {
        for pair in query.split('&').take(64) {
            if let Some(v) = pair.strip_prefix("u=") {
                return valid_user(v);
            }
        }
    }
    if let Some(v) = req.headers().get("end-user").and_then(|v| v.to_str().ok()) {
        return valid_user(v);
    }
    for cookie in req.headers().get_all(COOKIE).iter().take(16) {
        let Ok(cookie) = cookie.to_str() else { continue };
        for c in cookie.split(';').take(64) {
            if let Some(v) = c.trim().strip_prefix("end-user=") {
                return valid_user(v);
            }
        }
    }
    None
}

/// A user name as typed: short, letters, digits, `-`, `_`, `.`, `@` (so it is a safe header
/// value and safe in HTML).
fn valid_user(v: &str) -> Option<String> {
    let v = v.trim();
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    ok.then(|| v.to_string())
}

/// The headers to send upstream: [`PROPAGATED_HEADERS`] copied from the request, and `end-user`
/// set to `user` when given.
fn forwarded_headers(incoming: &HeaderMap, user: Option<&str>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in PROPAGATED_HEADERS {
        if let Some(v) = incoming.get(*name) {
            out.insert(HeaderName::from_static(name), v.clone());
        }
    }
    if let Some(user) = user.and_then(|u| HeaderValue::from_str(u).ok()) {
        out.insert(HeaderName::from_static("end-user"), user);
    }
    out
}

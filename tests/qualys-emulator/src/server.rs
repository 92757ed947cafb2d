//! The request pipeline: admin routes aside, every request is counted, checked against its
//! family's rate limit, possibly faulted, authenticated, served, and possibly mangled.

use crate::http::{self, ApiError, Query, Reply};
use crate::limits::{self, Verdict};
use crate::routes::{self, Route};
use crate::state::Shared;
use crate::{admin, auth, cdr, faults, images, registry, stats};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The router: everything goes through [`dispatch`].
pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(dispatch).with_state(shared)
}

/// Reads a request body, or a 400.
pub(crate) async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| http::bad_request(format!("Cannot read the request body: {e}")))
}

async fn dispatch(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path == "/__emulator" || path.starts_with("/__emulator/") {
        return admin::handle(&shared, req).await;
    }
    let _in_flight = shared.enter();
    let method = req.method().clone();
    let resolved = routes::resolve(&method, &path);
    stats::bump(&mut shared.stats.lock().calls, &resolved.key);

    // The limiter sees every arrival of a limited family, before anything else.
    let family = limits::family(&path);
    let mut window = None;
    if let Some(family) = family {
        let verdict = shared.limiter.lock().check(family, Instant::now());
        match verdict {
            Verdict::Unlimited => {}
            Verdict::Allowed(w) => window = Some(w),
            Verdict::Throttled(w, wait) => {
                stats::bump(&mut shared.stats.lock().rate_limit_violations, family);
                tracing::debug!(%method, %path, family, wait, "rate limit exceeded");
                let message = format!(
                    "API rate limit exceeded: {} calls per {} seconds for this endpoint",
                    w.limit, w.window_secs
                );
                return limits::too_many(Some(w), wait, true, &message);
            }
        }
    }

    let faults = {
        let f = shared.faults.lock();
        faults::applies(&f, &path).then(|| f.clone())
    };
    let count_fault = |kind: &str| stats::bump(&mut shared.stats.lock().injected_faults, kind);
    if let Some(f) = &faults {
        if f.latency_ms > 0 && faults::roll(f.latency_rate) {
            count_fault("latency");
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        if faults::roll(f.error_5xx_rate) {
            count_fault("5xx");
            return finish(faults::server_error(), window, &method, &path);
        }
        if faults::roll(f.throttle_429_rate) {
            count_fault("429");
            let w = family.and_then(|fam| {
                shared.limiter.lock().rule(fam).map(|r| limits::Window {
                    limit: r.limit,
                    window_secs: r.window_secs,
                    remaining: 0,
                })
            });
            return finish(faults::throttle(w), None, &method, &path);
        }
    }

    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let query = Query::parse(req.uri().query());
    let (parts, body) = req.into_parts();
    let reply = match read_body(body).await {
        Ok(body) => match resolved.route {
            None if resolved.other_method => Err(ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: format!("Method {method} is not supported for {path}"),
            }),
            None => Err(http::not_found(format!("No endpoint {method} {path}"))),
            Some(Route::Auth) => auth::login(&shared, &body, client_ip),
            Some(route) => {
                if auth::bearer_ok(&shared, &parts.headers) {
                    serve(&shared, route, &query, &body)
                } else {
                    shared.stats.lock().rejected_tokens += 1;
                    Ok(auth::unauthorized())
                }
            }
        },
        Err(e) => Err(e),
    };
    let resp = reply.unwrap_or_else(|e| e.into_response());
    let mut resp = finish(resp, window, &method, &path);

    if let Some(f) = &faults {
        if faults::roll(f.drop_rate) {
            count_fault("drop");
            return faults::drop_connection(resp);
        }
        if faults::roll(f.malformed_rate) {
            count_fault("malformed");
            resp = faults::malformed(resp).await;
        }
    }
    resp
}

/// Adds the window headers and logs the answer.
fn finish(
    mut resp: Response,
    window: Option<limits::Window>,
    method: &axum::http::Method,
    path: &str,
) -> Response {
    if let Some(w) = window {
        limits::add_headers(resp.headers_mut(), w);
    }
    tracing::debug!(%method, path, status = resp.status().as_u16(), "request");
    resp
}

/// Serves an authenticated request.
fn serve(shared: &Shared, route: Route, q: &Query, body: &[u8]) -> Reply {
    match route {
        Route::Auth => auth::login(shared, body, None),
        Route::AwsBase => registry::aws_base(),
        Route::Connectors(account) => registry::list_connectors(shared, account.as_deref()),
        Route::CreateConnector => registry::create_connector(shared, body),
        Route::ListRegistries => registry::list_registries(shared, q),
        Route::CreateRegistry => registry::create_registry(shared, body),
        Route::ValidateRegistry => registry::validate_registry(body),
        Route::GetRegistry(id) => registry::get_registry(shared, &id),
        Route::DeleteRegistry(id) => registry::delete_registry(shared, &id),
        Route::CreateSchedule(id) => registry::create_schedule(shared, &id, body),
        Route::ListSchedules(id) => registry::list_schedules(shared, &id, q),
        Route::ListImages => images::list_images(shared, q),
        Route::BulkImages => Err(http::not_found(
            "GET /images/list (the bulk cursor API) is not emulated",
        )),
        Route::GetImage(sha) => images::get_image(shared, &sha),
        Route::ImageVulns(sha) => images::image_vulns(shared, &sha),
        Route::ImageVulnCount(sha) => images::image_vuln_count(shared, &sha),
        Route::ListSensors => images::list_sensors(shared, q),
        Route::GetSensor(id) => images::get_sensor(shared, &id),
        Route::CdrFindings => cdr::findings(shared, q),
    }
}

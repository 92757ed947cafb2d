//! The admin API under `/__emulator/` (no auth, no rate limit, no faults, not counted): what
//! [`crate::RunningEmulator`] offers in process, for out-of-process users.

use crate::config::{Faults, PushedImage, RateLimitRule, SeedImage, cdr_findings_from_value};
use crate::http::{self, ApiError, Reply, bad_request, ok};
use crate::state::Shared;
use crate::{images, registry};
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("Invalid JSON: {e}")))
}

fn no_content() -> Reply {
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// Serves `/__emulator/…`.
pub(crate) async fn handle(shared: &Shared, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let reply = match crate::server::read_body(req.into_body()).await {
        Ok(body) => route(shared, &method, &path, &body),
        Err(e) => Err(e),
    };
    reply.unwrap_or_else(IntoResponse::into_response)
}

fn route(shared: &Shared, method: &Method, path: &str, body: &[u8]) -> Reply {
    let route = path.strip_prefix("/__emulator").unwrap_or_default();
    match (method.clone(), route) {
        (Method::GET, "/health") => ok(&json!({"status": "ok"})),
        (Method::GET, "/stats") => ok(&json!(shared.stats.lock().clone())),
        (Method::POST, "/reset-stats") => {
            *shared.stats.lock() = Default::default();
            no_content()
        }
        (Method::GET, "/faults") => ok(&json!(shared.faults.lock().clone())),
        (Method::PUT, "/faults") => {
            *shared.faults.lock() = parse::<Faults>(body)?;
            no_content()
        }
        (Method::PUT, "/rate-limits") => {
            shared.set_rate_limits(&parse::<Vec<RateLimitRule>>(body)?);
            no_content()
        }
        (Method::POST, "/images") => {
            let img = parse::<SeedImage>(body)?;
            if !img.sha.trim().is_empty() && crate::ids::normalize_sha(&img.sha).is_none() {
                return Err(bad_request(
                    "sha must be 64 hex digits (or empty to derive one)",
                ));
            }
            let sha = shared.world.lock().seed_image(img);
            Ok(http::json(StatusCode::CREATED, &json!({"sha": sha})))
        }
        (Method::POST, "/pushes") => {
            let p = parse::<PushedImage>(body)?;
            if crate::ids::normalize_sha(&p.digest).is_none() {
                return Err(bad_request("digest must be sha256: and 64 hex digits"));
            }
            shared.world.lock().push(
                &p.registry,
                &p.repository,
                &p.tag,
                &p.digest,
                p.vulnerabilities,
            );
            no_content()
        }
        (Method::PUT, "/cdr-findings") => {
            let findings =
                cdr_findings_from_value(parse(body)?).map_err(|e| bad_request(e.to_string()))?;
            shared.world.lock().cdr_findings = findings;
            no_content()
        }
        (Method::GET, "/registries") => ok(&Value::Array(registry::all_registries(shared))),
        (Method::POST, "/sensors") => {
            let sensor = images::add_sensor(shared, parse(body)?)
                .ok_or_else(|| bad_request("a sensor is a JSON object"))?;
            Ok(http::json(StatusCode::CREATED, &sensor))
        }
        _ => Err(http::not_found(format!(
            "No admin endpoint {method} {path}"
        ))),
    }
}

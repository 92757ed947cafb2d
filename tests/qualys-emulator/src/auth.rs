//! `POST /auth` (docs/qualys-api.md §1.1): a form login that answers 201 with a raw JWT, and the
//! bearer check every other endpoint makes.

use crate::http::{self, Reply, parse_pairs};
use crate::state::Shared;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use std::time::{Duration, Instant};

/// `POST /auth` with the form `username`, `password`, `token=true`.
pub(crate) fn login(shared: &Shared, body: &[u8], client_ip: Option<String>) -> Reply {
    let form = parse_pairs(&String::from_utf8_lossy(body));
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        return Err(http::bad_request("username and password are required"));
    };
    if field("token").map(|t| t.eq_ignore_ascii_case("true")) != Some(true) {
        return Err(http::bad_request("token=true is required"));
    }
    let s = &shared.settings;
    if username != s.username || password != s.password {
        shared.stats.lock().auth_failures += 1;
        tracing::info!(username, "login refused");
        return Ok(http::text(StatusCode::UNAUTHORIZED, "Unauthorized user"));
    }
    let jwt = issue_jwt(
        username,
        s.token_ttl,
        client_ip.as_deref().unwrap_or("127.0.0.1"),
    );
    let now = Instant::now();
    let mut world = shared.world.lock();
    world.tokens.retain(|_, expires| *expires > now);
    world.tokens.insert(jwt.clone(), now + s.token_ttl);
    tracing::debug!(username, "login accepted");
    Ok(http::text(StatusCode::CREATED, jwt))
}

/// A JWT shaped like Qualys' (HS512, claims as in samples/qualys/auth-jwt-claims.json plus
/// `iat`/`exp`), with a random signature.
fn issue_jwt(username: &str, ttl: Duration, ip: &str) -> String {
    let now = http::now_ms() / 1000;
    let user_id = crate::ids::fnv1a(&[username]);
    let claims = json!({
        "sub": username,
        "loginResponse": "SUCCESSFUL",
        "successfulAuthenticationHandlers": ["AuthHandler2"],
        "iss": "qas",
        "ipAddress": ip,
        "portalUserId": 100_000_000 + user_id % 900_000_000,
        "usertype": "fo",
        "qwebUserId": 1_000_000 + (user_id >> 32) % 9_000_000,
        "credentialType": "UsernamePasswordCredential",
        "aud": "qas",
        "modulesAllowed": ["ADMIN", "ASSET INVENTORY", "CA", "CERTVIEW", "CS", "PORTAL TAGGING", "TOTALCLOUD", "VM SCANNER"],
        "iat": now,
        "exp": now + ttl.as_secs(),
    });
    let signature: Vec<u8> = (0..64).map(|_| fastrand::u8(..)).collect();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Whether `headers` carry `Authorization: Bearer <token>` with an issued, unexpired token or a
/// configured API token.
pub(crate) fn bearer_ok(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return false;
    }
    if shared.settings.api_tokens.iter().any(|t| t == token) {
        return true;
    }
    shared
        .world
        .lock()
        .tokens
        .get(token)
        .is_some_and(|expires| *expires > Instant::now())
}

/// The 401 for a missing, unknown or expired token.
pub(crate) fn unauthorized() -> Response {
    http::error(StatusCode::UNAUTHORIZED, "Unauthorized user")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        let jwt = issue_jwt("u", Duration::from_secs(60), "10.0.0.1");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "eyJhbGciOiJIUzUxMiJ9");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "u");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        assert!(
            claims["modulesAllowed"]
                .as_array()
                .unwrap()
                .contains(&json!("CS"))
        );
    }
}

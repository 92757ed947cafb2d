//! `qflows qualys info`: how qflows reaches Qualys, through the one Qualys client. No secret
//! is printed: not the password, not the token (only the claims of a JWT).

use super::output::{OutputFormat, QualysOutputArgs, clean, table};
use crate::config::QualysArgs;
use base64::Engine;
use clap::Subcommand;
use qflows_activities::qualys::{QualysAuth, QualysClient, RateLimitState};
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `qflows qualys …`.
#[allow(missing_docs)] // the fields are flag groups, documented where they are defined
#[derive(Debug, Subcommand)]
pub enum QualysCommand {
    /// The gateway, the auth mode, the token's expiry, Qualys' AWS account and external ID,
    /// and the rate-limit state (no secret is printed).
    Info {
        #[command(flatten)]
        qualys: QualysArgs,
        #[command(flatten)]
        args: QualysOutputArgs,
    },
}

/// `qflows qualys …`.
pub async fn run(command: QualysCommand) -> anyhow::Result<()> {
    match command {
        QualysCommand::Info { qualys, args } => info(&qualys.with_env_secrets(), args).await,
    }
}

/// What `qflows qualys info` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QualysInfo {
    /// The gateway URL.
    pub gateway: String,
    /// The platform, when given by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `password` (JWT login) or `token`.
    pub auth_mode: &'static str,
    /// The login name (password mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Whether Qualys accepted the credentials (a login, or a ready token's first request), or
    /// why not.
    pub auth: Result<(), String>,
    /// The claims of the bearer token, when it is a JWT (never the token itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenInfo>,
    /// Qualys' AWS account and the external ID of the scan role's trust policy.
    pub aws_base: Result<AwsBaseInfo, String>,
    /// Rate limits of the families this command used (or that are held or advertised).
    pub rate_limits: Vec<RateLimitState>,
}

/// What a JWT says about itself.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Whether the token is a JWT whose claims could be read.
    pub jwt: bool,
    /// Subject (the user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Issued at (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    /// Expires at (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Seconds until it expires (negative: expired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<i64>,
    /// Qualys modules the user may use (`CS` is Container Security).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
}

/// Qualys' AWS base.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsBaseInfo {
    /// Qualys' AWS account.
    pub account_id: String,
    /// The external ID.
    pub external_id: String,
}

/// The claims of a JWT, without verifying it (only to show its expiry); `jwt: false` for
/// anything else. The token itself never leaves this function.
pub fn token_info(token: &str, now: SystemTime) -> TokenInfo {
    let none = TokenInfo {
        jwt: false,
        subject: None,
        issued_at: None,
        expires_at: None,
        expires_in_secs: None,
        modules: Vec::new(),
    };
    let mut parts = token.trim().split('.');
    let (Some(_), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return none;
    };
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let Some(Value::Object(claims)) = decoded else {
        return none;
    };
    let time = |key: &str| claims.get(key).and_then(Value::as_u64);
    let at = |secs: u64| qflows_workflows::clock::rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    TokenInfo {
        jwt: true,
        subject: claims
            .get("sub")
            .and_then(Value::as_str)
            .map(|s| clean(s, 100)),
        issued_at: time("iat").map(at),
        expires_at: time("exp").map(at),
        expires_in_secs: time("exp").map(|e| e as i64 - now_secs),
        modules: claims
            .get("modulesAllowed")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(Value::as_str)
                    .map(|s| clean(s, 40))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `qflows qualys info`: the gateway, the auth mode, the token's expiry, the AWS base and the
/// rate-limit state. Fails (after printing) when Qualys refused the credentials or the AWS base.
pub async fn info(qualys: &QualysArgs, args: QualysOutputArgs) -> anyhow::Result<()> {
    let config = qualys.to_config()?;
    let (auth_mode, username) = match &config.auth {
        QualysAuth::Password { username, .. } => ("password", Some(clean(username, 100))),
        QualysAuth::Token(_) => ("token", None),
    };
    let client = QualysClient::new(config)?;
    let token = client.bearer_token().await;
    let (auth, token) = match token {
        Ok(token) => (Ok(()), Some(token_info(token.expose(), SystemTime::now()))),
        Err(e) => (Err(e.to_string()), None),
    };
    let mut auth = auth;
    let aws_base = match &auth {
        Ok(()) => match client.aws_base().await {
            Ok(b) => Ok(AwsBaseInfo {
                account_id: clean(&b.account_id, 40),
                external_id: clean(&b.external_id, 80),
            }),
            // A ready token is only tried by its first request.
            Err(e) if e.kind() == "auth" => {
                auth = Err(e.to_string());
                Err("not read: Qualys refused the credentials".into())
            }
            Err(e) => Err(e.to_string()),
        },
        Err(_) => Err("not asked: the login failed".into()),
    };
    let rate_limits = client
        .rate_limits()
        .into_iter()
        .filter(|r| {
            r.sent_in_window > 0
                || r.advertised
                || r.remaining.is_some()
                || r.held_for_secs.is_some()
        })
        .collect();
    let info = QualysInfo {
        gateway: client.gateway().to_string(),
        platform: qualys.pod.clone(),
        auth_mode,
        username,
        auth,
        token,
        aws_base,
        rate_limits,
    };
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&info_json(&info))?),
        OutputFormat::Table => print!("{}", render_info(&info)),
    }
    if let Err(e) = &info.auth {
        anyhow::bail!("Qualys refused the login: {e}");
    }
    if let Err(e) = &info.aws_base {
        anyhow::bail!("Qualys' AWS base: {e}");
    }
    Ok(())
}

/// The JSON form (results as `{"ok": …}` / `{"error": …}`).
fn info_json(info: &QualysInfo) -> Value {
    let mut value = serde_json::to_value(info).unwrap_or_default();
    let result = |r: &Result<Value, String>| match r {
        Ok(v) => v.clone(),
        Err(e) => serde_json::json!({ "error": e }),
    };
    value["auth"] = result(
        &info
            .auth
            .as_ref()
            .map(|()| Value::from("ok"))
            .map_err(Clone::clone),
    );
    value["awsBase"] = result(
        &info
            .aws_base
            .as_ref()
            .map(|b| serde_json::to_value(b).unwrap_or_default())
            .map_err(Clone::clone),
    );
    value
}

fn duration_text(secs: i64) -> String {
    let (sign, secs) = if secs < 0 { ("-", -secs) } else { ("", secs) };
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{sign}{h}h{m:02}m")
    } else if m > 0 {
        format!("{sign}{m}m{s:02}s")
    } else {
        format!("{sign}{s}s")
    }
}

/// The plain-text form of `qflows qualys info`.
pub fn render_info(info: &QualysInfo) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "gateway       {}", clean(&info.gateway, 200));
    if let Some(platform) = &info.platform {
        let _ = writeln!(out, "platform      {}", clean(platform, 20));
    }
    write_auth(&mut out, info);
    if let Some(token) = &info.token {
        write_token(&mut out, token);
    }
    write_aws_base(&mut out, &info.aws_base);
    write_rate_limits(&mut out, &info.rate_limits);
    out
}

/// The `auth` and `login` lines: how qflows authenticates, and whether Qualys accepted it.
fn write_auth(out: &mut String, info: &QualysInfo) {
    use std::fmt::Write;
    let mode = match (&info.username, info.auth_mode) {
        (Some(user), _) => format!("password (JWT login as {user})"),
        (None, mode) => format!("{mode} (QUALYS_API_TOKEN / QUALYS_ACCESS_TOKEN)"),
    };
    let _ = writeln!(out, "auth          {mode}");
    match &info.auth {
        Ok(()) if info.auth_mode == "token" => {
            let _ = writeln!(out, "login         ok (Qualys accepted the token)");
        }
        Ok(()) => {
            let _ = writeln!(out, "login         ok");
        }
        Err(e) => {
            let _ = writeln!(out, "login         FAILED: {}", clean(e, 300));
        }
    }
}

/// The `token` lines: a JWT's expiry, issue time, subject and modules.
fn write_token(out: &mut String, token: &TokenInfo) {
    use std::fmt::Write;
    if !token.jwt {
        let _ = writeln!(out, "token         not a JWT: its expiry is unknown");
        return;
    }
    let expiry = match (&token.expires_at, token.expires_in_secs) {
        (Some(at), Some(secs)) if secs >= 0 => {
            format!("{at} (in {})", duration_text(secs))
        }
        (Some(at), Some(_)) => format!("{at} (EXPIRED)"),
        _ => "not stated".into(),
    };
    let _ = writeln!(out, "token         JWT, expires {expiry}");
    if let Some(at) = &token.issued_at {
        let _ = writeln!(out, "  issued      {at}");
    }
    if let Some(sub) = &token.subject {
        let _ = writeln!(out, "  subject     {sub}");
    }
    if !token.modules.is_empty() {
        let _ = writeln!(out, "  modules     {}", token.modules.join(", "));
    }
}

/// The lines for Qualys' AWS account and the external ID the scan role trusts.
fn write_aws_base(out: &mut String, aws_base: &Result<AwsBaseInfo, String>) {
    use std::fmt::Write;
    match aws_base {
        Ok(base) => {
            let _ = writeln!(
                out,
                "aws account   {} (Qualys' AWS account)",
                base.account_id
            );
            let _ = writeln!(
                out,
                "external id   {} (for the scan role's trust policy)",
                base.external_id
            );
        }
        Err(e) => {
            let _ = writeln!(out, "aws base      FAILED: {}", clean(e, 300));
        }
    }
}

/// The rate-limit table: per API family, the limit and where it came from, what was sent in the
/// window, what remains, and whether requests are held.
fn write_rate_limits(out: &mut String, rate_limits: &[RateLimitState]) {
    use std::fmt::Write;
    if rate_limits.is_empty() {
        let _ = writeln!(out, "rate limits   nothing learned (no request answered)");
        return;
    }
    let _ = writeln!(out, "rate limits");
    let rows: Vec<Vec<String>> = rate_limits
        .iter()
        .map(|r| {
            vec![
                r.family.to_string(),
                match r.limit {
                    Some(l) => format!("{l} / {}s", r.window_secs),
                    None => "none".into(),
                },
                if r.advertised { "Qualys" } else { "documented" }.to_string(),
                r.sent_in_window.to_string(),
                r.remaining.map_or_else(|| "-".into(), |n| n.to_string()),
                r.held_for_secs
                    .map_or_else(|| "no".into(), |s| format!("{s:.0}s")),
            ]
        })
        .collect();
    let header = ["  FAMILY", "LIMIT", "FROM", "SENT", "REMAINING", "HELD"];
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|mut r| {
            r[0] = format!("  {}", r[0]);
            r
        })
        .collect();
    out.push_str(&table(&header, &rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let e = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        format!(
            "{}.{}.{}",
            e(br#"{"alg":"HS512"}"#),
            e(claims.to_string().as_bytes()),
            e(b"signature")
        )
    }

    #[test]
    fn a_jwt_shows_its_expiry_and_nothing_else_is_guessed() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let info = token_info(
            &jwt(
                serde_json::json!({"sub": "alice", "iat": 1_800_000_000u64 - 60,
                "exp": 1_800_000_000u64 + 3600, "modulesAllowed": ["CS", "VM SCANNER"]}),
            ),
            now,
        );
        assert!(info.jwt);
        assert_eq!(info.expires_in_secs, Some(3600));
        assert_eq!(info.subject.as_deref(), Some("alice"));
        assert_eq!(info.modules, vec!["CS", "VM SCANNER"]);
        assert!(info.expires_at.unwrap().starts_with("2027-01-15T"));
        assert!(!token_info("opaque-token", now).jwt);
        assert!(!token_info("a.b.c", now).jwt);
    }
}

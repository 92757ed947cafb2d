//! QScanner's command line: `qscanner <global_options> command <command_options> target`,
//! flags as `--flag value` or `--flag=value` (docs/qualys-api.md §4.1).

use std::fmt;

/// A usage error: QScanner exits 2 (`EXIT_INVALID_PARAMETER`).
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

/// Flags that take a value.
const VALUE_FLAGS: &[&str] = &[
    "--pod",
    "--gateway-url",
    "--access-token",
    "--client-id",
    "--client-secret",
    "--scan-types",
    "--output-dir",
    "--cache-dir",
    "--cache",
    "--mode",
    "--policy-tags",
    "--report-format",
    "--format",
    "--log-level",
    "--scan-timeout",
    "--proxy",
    "--cert-path",
    "--platform",
    "--storage-driver",
    "--registry-username",
    "--registry-password",
    "--registry-token",
    "--exclude-dirs",
    "--exclude-files",
    "--include-dirs",
    "--disable-sca-languages",
    "--detection-priority",
    "--qds-threshold",
    "--secret-config-file",
    "--secret-config-refresh-duration",
    "--max-network-retries",
    "--network-retry-wait-min",
    "--network-retry-wait-max",
];

/// Boolean flags: `--flag`, `--flag=true` or `--flag=false`.
const BOOL_FLAGS: &[&str] = &[
    "--offline-scan",
    "--quiet",
    "--file-logging",
    "--skip-verify-tls",
    "--skip-java-db-update",
    "--limit-resource-usage",
    "--exit-if-os-not-found",
    "--exit-if-os-pkg-not-found",
    "--force-refresh-secret-config",
    "--collect-build-pipeline-metadata",
    "--cache-auth-token",
];

/// QScanner's commands; the stand-in emulates `image`.
const COMMANDS: &[&str] = &[
    "image",
    "tar",
    "repo",
    "rootfs",
    "lambda",
    "container",
    "vmsnapshot",
    "winvmsnapshot",
    "configure",
    "clear-local-cache",
    "show-scan-metadata",
    "show-scanner-version-hash",
    "harbor-registry-service",
];

const PODS: &[&str] = &[
    "US1", "US2", "US3", "US4", "EU1", "EU2", "EU3", "IN1", "CA1", "AE1", "UK1", "AU1", "KSA1",
];
const MODES: &[&str] = &[
    "inventory-only",
    "scan-only",
    "get-report",
    "evaluate-policy",
];
const SCAN_TYPES: &[&str] = &[
    "pkg",
    "os",
    "sca",
    "secret",
    "malware",
    "fileinsight",
    "compliance",
    "manifest",
    "winregistry",
];
const REPORT_FORMATS: &[&str] = &["table", "sarif", "json", "gitlab"];
const FORMATS: &[&str] = &[
    "json",
    "db",
    "spdx",
    "spdx-tlv",
    "cyclonedx",
    "table",
    "secret-result",
];
const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error", "fatal"];

/// What was asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// `--version`.
    Version,
    /// `--help`.
    Help,
    /// `image <ref>` with options.
    Image(Box<Options>),
}

/// The options of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// The image reference.
    pub target: String,
    /// `--pod`, upper-cased.
    pub pod: Option<String>,
    /// `--gateway-url`.
    pub gateway_url: Option<String>,
    /// `--access-token` (recorded so that tests can tell the runner never uses it).
    pub access_token_flag: Option<String>,
    /// `--client-id` and `--client-secret` both given.
    pub client_credentials: bool,
    /// `--mode`.
    pub mode: String,
    /// `--scan-types`, with `pkg` expanded to `os` and `sca`.
    pub scan_types: Vec<String>,
    /// `--policy-tags`.
    pub policy_tags: Vec<String>,
    /// `--report-format`.
    pub report_formats: Vec<String>,
    /// `--format`.
    pub formats: Vec<String>,
    /// `--output-dir`.
    pub output_dir: Option<String>,
    /// `--cache-dir`.
    pub cache_dir: Option<String>,
    /// `--offline-scan`.
    pub offline_scan: bool,
    /// `--log-level`.
    pub log_level: String,
    /// `--platform`.
    pub platform: Option<String>,
}

fn list(value: &str, allowed: &[&str], flag: &str) -> Result<Vec<String>, UsageError> {
    let items: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if items.is_empty() {
        return Err(usage(format!("{flag}: a value is required")));
    }
    if let Some(bad) = items.iter().find(|i| !allowed.contains(&i.as_str())) {
        return Err(usage(format!(
            "{flag}: invalid value \"{bad}\"; allowed: {}",
            allowed.join(", ")
        )));
    }
    Ok(items)
}

fn one_of(value: &str, allowed: &[&str], flag: &str) -> Result<String, UsageError> {
    if allowed.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(usage(format!(
            "{flag}: invalid value \"{value}\"; allowed: {}",
            allowed.join(", ")
        )))
    }
}

/// Expands `pkg` into `os` and `sca`, keeping the order and dropping duplicates.
fn expand_scan_types(types: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in types {
        let parts: Vec<String> = if t == "pkg" {
            vec!["os".into(), "sca".into()]
        } else {
            vec![t]
        };
        for p in parts {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Parses argv (without the program name).
pub fn parse(argv: &[String]) -> Result<Invocation, UsageError> {
    let mut opts = Options {
        mode: "get-report".into(),
        scan_types: expand_scan_types(vec!["pkg".into(), "fileinsight".into()]),
        report_formats: vec!["table".into(), "sarif".into()],
        formats: vec!["json".into()],
        log_level: "info".into(),
        ..Options::default()
    };
    let mut client_id = false;
    let mut client_secret = false;
    let mut command: Option<String> = None;
    let mut target: Option<String> = None;
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        match arg.as_str() {
            "--version" | "-v" => return Ok(Invocation::Version),
            "--help" | "-h" => return Ok(Invocation::Help),
            _ => {}
        }
        if arg.starts_with("--") {
            let flag = arg.as_str();
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            if BOOL_FLAGS.contains(&name) {
                let value = match inline.as_deref() {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(other) => {
                        return Err(usage(format!("{name}: invalid boolean \"{other}\"")));
                    }
                };
                if name == "--offline-scan" {
                    opts.offline_scan = value;
                }
                continue;
            }
            if !VALUE_FLAGS.contains(&name) {
                return Err(usage(format!("unknown flag: {name}")));
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    let Some(v) = argv.get(i) else {
                        return Err(usage(format!("flag needs an argument: {name}")));
                    };
                    i += 1;
                    v.clone()
                }
            };
            match name {
                "--pod" => {
                    let upper = value.trim().to_ascii_uppercase();
                    opts.pod = Some(one_of(&upper, PODS, name)?);
                }
                "--gateway-url" => {
                    if !(value.starts_with("https://") || value.starts_with("http://")) {
                        return Err(usage(format!("{name}: not an http(s) URL")));
                    }
                    opts.gateway_url = Some(value);
                }
                "--access-token" => opts.access_token_flag = Some(value),
                "--client-id" => client_id = !value.is_empty(),
                "--client-secret" => client_secret = !value.is_empty(),
                "--mode" => opts.mode = one_of(&value, MODES, name)?,
                "--scan-types" => {
                    opts.scan_types = expand_scan_types(list(&value, SCAN_TYPES, name)?)
                }
                "--policy-tags" => {
                    opts.policy_tags = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                "--report-format" => opts.report_formats = list(&value, REPORT_FORMATS, name)?,
                "--format" => opts.formats = list(&value, FORMATS, name)?,
                "--log-level" => opts.log_level = one_of(&value, LOG_LEVELS, name)?,
                "--output-dir" => opts.output_dir = Some(value),
                "--cache-dir" => opts.cache_dir = Some(value),
                "--platform" => opts.platform = Some(value),
                _ => {}
            }
            continue;
        }
        if command.is_none() {
            if !COMMANDS.contains(&arg.as_str()) {
                return Err(usage(format!("unknown command \"{arg}\"")));
            }
            command = Some(arg.clone());
        } else if target.is_none() {
            target = Some(arg.clone());
        } else {
            return Err(usage(format!("unexpected argument \"{arg}\"")));
        }
    }
    opts.client_credentials = client_id && client_secret;
    match command.as_deref() {
        None => Err(usage("a command is required (e.g. image)")),
        Some("image") => {
            let Some(target) = target.filter(|t| !t.is_empty()) else {
                return Err(usage("image: the image reference is required"));
            };
            opts.target = target;
            Ok(Invocation::Image(Box::new(opts)))
        }
        Some(other) => Err(usage(format!(
            "the qscanner stand-in does not emulate the {other} command"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_the_runner_command_line() {
        let inv = parse(&args(&[
            "--pod",
            "us2",
            "--scan-types",
            "pkg,secret",
            "--output-dir=/tmp/x",
            "--mode",
            "evaluate-policy",
            "--policy-tags",
            "a,b",
            "--report-format",
            "sarif",
            "--format",
            "json",
            "--offline-scan=true",
            "--log-level",
            "info",
            "image",
            "repo/app:1",
        ]))
        .unwrap();
        let Invocation::Image(o) = inv else {
            panic!("{inv:?}")
        };
        assert_eq!(o.pod.as_deref(), Some("US2"));
        assert_eq!(o.scan_types, ["os", "sca", "secret"]);
        assert_eq!(o.output_dir.as_deref(), Some("/tmp/x"));
        assert_eq!(o.mode, "evaluate-policy");
        assert_eq!(o.policy_tags, ["a", "b"]);
        assert_eq!(o.report_formats, ["sarif"]);
        assert!(o.offline_scan);
        assert_eq!(o.target, "repo/app:1");
    }

    #[test]
    fn rejects_bad_usage() {
        for bad in [
            &["--mode", "bogus", "image", "x"][..],
            &["--pod", "MARS1", "image", "x"],
            &["--scan-types", "viruses", "image", "x"],
            &["--unknown", "image", "x"],
            &["image"],
            &["image", "a", "b"],
            &["--pod"],
            &["tar", "x.tar"],
            &[],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&args(&["--version"])).unwrap(), Invocation::Version);
    }
}

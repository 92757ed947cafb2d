//! The files QScanner writes into `--output-dir` (docs/qualys-api.md §4.5), in the shapes of the
//! samples in `/work/shared/research/samples/qualys/`.

use crate::args::Options;
use crate::scenario::{Plan, SecretHit, Vuln};
use serde_json::{Value, json};

/// 64 deterministic hex digits derived from `input` (four FNV-1a 64 hashes, differently seeded).
pub fn hex64(input: &str) -> String {
    (0u64..4)
        .map(|seed| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for b in input.bytes().chain(seed.to_le_bytes()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

/// The image id QScanner would report for `target`.
pub fn image_id(target: &str) -> String {
    hex64(&format!("image-id:{target}"))
}

/// The digest: the one in the reference (`…@sha256:<hex>`), else a derived one.
pub fn image_digest(target: &str) -> String {
    match target.rsplit_once('@') {
        Some((_, digest)) if digest.starts_with("sha256:") => digest.to_string(),
        _ => format!("sha256:{}", hex64(&format!("digest:{target}"))),
    }
}

fn repo_tags(target: &str) -> Vec<String> {
    // README l.1660: scanned by name@digest from a remote registry, RepoTags are missing.
    if target.contains('@') {
        Vec::new()
    } else {
        vec![target.to_string()]
    }
}

fn repo_digests(target: &str) -> Vec<String> {
    let repo = target.split_once('@').map(|(r, _)| r).unwrap_or(target);
    let repo = match repo.rfind(':') {
        Some(i) if !repo[i..].contains('/') => &repo[..i],
        _ => repo,
    };
    vec![format!("{repo}@{}", image_digest(target))]
}

fn os_name(target: &str) -> &'static str {
    if target.contains("alpine") {
        "Alpine Linux 3.20.3"
    } else {
        "Debian Linux 12.6"
    }
}

/// `<imageId>-ScanResult.json`: inventory, scans performed, secrets (with `Match`).
pub fn scan_result(opts: &Options, plan: &Plan, now_ns: u128) -> Value {
    let scans: Vec<Value> = std::iter::once("metadata".to_string())
        .chain(opts.scan_types.iter().cloned())
        .map(|t| json!({"ScanType": t, "ScanDuration": 1_000_000, "Status": "SUCCESS"}))
        .collect();
    let secrets_scanned = opts.scan_types.iter().any(|t| t == "secret");
    let mut by_target: Vec<(String, Vec<&SecretHit>)> = Vec::new();
    if secrets_scanned {
        for s in &plan.secrets {
            match by_target.iter_mut().find(|(t, _)| *t == s.target) {
                Some((_, list)) => list.push(s),
                None => by_target.push((s.target.clone(), vec![s])),
            }
        }
    }
    let secret_results: Vec<Value> = by_target
        .iter()
        .map(|(target, hits)| {
            let secrets: Vec<Value> = hits
                .iter()
                .map(|s| {
                    let mut v = json!({
                        "RuleID": s.rule_id,
                        "Category": s.category,
                        "Severity": s.severity,
                        "Title": s.title,
                        "StartLine": s.start_line,
                        "StartColumn": 1,
                        "EndLine": s.start_line,
                        "Layer": {"DiffID": format!("sha256:{}", hex64(&format!("layer:{}", opts.target)))},
                    });
                    if let Some(m) = &s.matched {
                        v["Match"] = json!(m);
                    }
                    v
                })
                .collect();
            json!({"Target": target, "Secrets": secrets})
        })
        .collect();
    let packages: Vec<Value> = plan
        .vulns
        .iter()
        .map(|v| json!({"Name": v.package, "Version": v.installed, "Arch": "amd64"}))
        .collect();
    json!({
        "SchemaVersion": 5,
        "QScannerVersion": crate::VERSION,
        "ScansPerformed": scans,
        "Metadata": {
            "ScanStartTime": now_ns,
            "ScanEndTime": now_ns,
            "TargetMetadata": {
                "ImageMetadata": {
                    "ImageID": format!("sha256:{}", image_id(&opts.target)),
                    "RepoTags": repo_tags(&opts.target),
                    "RepoDigests": repo_digests(&opts.target),
                    "OS": os_name(&opts.target),
                    "Architecture": "amd64"
                }
            }
        },
        "OSResults": [{"Target": os_name(&opts.target), "Packages": packages}],
        "SecretResults": secret_results,
    })
}

fn vuln_scanned(opts: &Options) -> bool {
    opts.scan_types.iter().any(|t| t == "os" || t == "sca")
}

/// `<imageId>-Report.sarif.json`, in the shape of `qscanner-report-sarif.shape.json`.
pub fn sarif(opts: &Options, plan: &Plan) -> Value {
    let vulns: &[Vuln] = if vuln_scanned(opts) { &plan.vulns } else { &[] };
    let level = |sev: u64| if sev >= 4 { "error" } else { "warning" };
    let rules: Vec<Value> = vulns
        .iter()
        .map(|v| {
            json!({
                "id": v.qid.to_string(),
                "shortDescription": {"text": v.title},
                "defaultConfiguration": {"level": level(v.severity)},
                "properties": {
                    "severity": v.severity,
                    "customerSeverity": v.severity,
                    "cve-ids": v.cves,
                    "qds": (v.severity * 14).to_string()
                }
            })
        })
        .collect();
    let layer = format!("sha256:{}", hex64(&format!("layer:{}", opts.target)));
    let results: Vec<Value> = vulns
        .iter()
        .map(|v| {
            json!({
                "ruleId": v.qid.to_string(),
                "level": level(v.severity),
                "message": {"text": v.title},
                "properties": {
                    "QID": v.qid,
                    "vulnerableSoftware": [{
                        "name": v.package,
                        "installedVersion": v.installed,
                        "fixedVersion": v.fixed,
                        "layerSHA": layer,
                    }]
                }
            })
        })
        .collect();
    json!({
        "$schema": "https://raw.githubusercontent.com/oasis-tcs/sarif-spec/master/Schemata/sarif-schema-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "QScanner", "version": crate::VERSION, "rules": rules}},
            "properties": {
                "imageID": image_id(&opts.target),
                "imageDigest": image_digest(&opts.target),
                "os": os_name(&opts.target),
                "repoTags": repo_tags(&opts.target),
            },
            "results": results
        }]
    })
}

/// `<imageId>-gitlab_secret_report.json`, in the shape of
/// `qualys-qscanner-gitlab-secret-report.json` (never with the secret itself).
pub fn gitlab_secret_report(plan: &Plan) -> Value {
    let vulns: Vec<Value> = plan
        .secrets
        .iter()
        .map(|s| {
            json!({
                "id": hex64(&format!("{}:{}:{}", s.rule_id, s.target, s.start_line))[..16],
                "category": "secret_detection",
                "name": s.title,
                "message": format!("{} detected", s.title),
                "severity": s.severity,
                "scanner": {"id": "qscanner", "name": "Qualys QScanner"},
                "location": {"file": s.target},
                "identifiers": [{"type": "qscanner_rule", "name": s.rule_id, "value": s.rule_id}]
            })
        })
        .collect();
    json!({
        "version": "15.0.0",
        "vulnerabilities": vulns,
        "scan": {"scanner": {"id": "qscanner", "name": "Qualys QScanner", "version": crate::VERSION},
                 "type": "secret_detection", "status": "success"}
    })
}

/// `<invocation>-ScanMetadata.json`, in the shape of `qscanner-scan-metadata.official.json`.
pub fn scan_metadata(opts: &Options, now_ns: u128) -> Value {
    let mode = match opts.mode.as_str() {
        "inventory-only" => 0,
        "scan-only" => 10,
        "get-report" => 20,
        _ => 30,
    };
    json!({
        "ScanStartTime": now_ns,
        "ScanEndTime": now_ns,
        "ScanOptions": {
            "ScanTypes": opts.scan_types,
            "OutputFormats": opts.formats,
            "ReportFormats": opts.report_formats,
            "OfflineScan": opts.offline_scan,
            "ScanTimeout": 300_000_000_000u64,
            "Mode": mode,
            "Tags": opts.policy_tags,
            "Platform": opts.platform.clone().unwrap_or_default(),
            "RegistryUsername": "",
            "RegistryPassword": "",
            "RegistryToken": "",
        },
        "ScannerVersionHash": {"metadata": hex64("metadata")[..40]},
    })
}

/// The console table (`--report-format table`).
pub fn table(opts: &Options, plan: &Plan) -> String {
    let mut out = format!("Image: {}\n", opts.target);
    out.push_str("SOFTWARE | QID | SEVERITY | CVE | INSTALLED | FIXED\n");
    if vuln_scanned(opts) {
        for v in &plan.vulns {
            out.push_str(&format!(
                "{} | {} | {} | {} | {} | {}\n",
                v.package,
                v.qid,
                v.severity,
                v.cves.join(","),
                v.installed,
                v.fixed.as_deref().unwrap_or("-")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_hex() {
        let a = image_id("repo/app:1");
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, image_id("repo/app:1"));
        assert_ne!(a, image_id("repo/app:2"));
        let pinned = format!("r/a@sha256:{}", "ab".repeat(32));
        assert_eq!(image_digest(&pinned), format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(
            repo_digests("host:5000/r/a:1"),
            [format!("host:5000/r/a@{}", image_digest("host:5000/r/a:1"))]
        );
    }
}

//! Evidence → TracingPolicy, one design per category (events-and-tetragon.md Part B6).
//!
//! Rules every design follows:
//! - hooks that see kernel copies (`security_*` functions) rather than a syscall's user memory,
//!   except where the syscall itself is the event (namespaces, mounts, setuid), which is hooked with
//!   `syscall: true` so `Override` can refuse it;
//! - no binary allow-lists an attacker sidesteps with another tool: binaries appear only as the
//!   thing detected (a shell, a netcat), never as the thing trusted;
//! - `syscall` always written; at most 5 selectors, 3 actions, 4 numeric values;
//! - blocking policies are scoped to the workload that produced the findings; a policy for an
//!   unknown workload, or for one whose namespace or labels Kubernetes would refuse, is rendered
//!   for audit only (the scope is never dropped to make a blocking policy fit);
//! - values taken from findings ([`observed`]: binaries by full path, ports, addresses) widen the
//!   audit form; the blocking form carries only the approved ones (see [`render_with`]).

use qflows_tetragon::policy::{
    API_VERSION, Arg, Ignore, Kprobe, LabelRequirement, LabelSelector, MatchAction, MatchArg,
    MatchBinaries, MatchNamespace, Metadata, PolicyOption, Selector, Spec, TracingPolicy,
};
use qflows_tetragon::schema;
use qflows_workflows::cdr::evidence::{
    AuditStyle, Category, Enforcement, Evidence, Observed, PolicyKey, TetragonVersion, Workload,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Label every generated policy carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "qflows");
/// Label naming the enforcement (`audit` or `enforce`).
pub const ENFORCEMENT_LABEL: &str = "qflows.io/enforcement";
/// Label naming the policy set (one CdrToPolicy workflow or one `policy generate` run).
pub const POLICY_SET_LABEL: &str = "qflows.io/policy-set";

/// How policies are rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Oldest Tetragon release the output must load on.
    pub tetragon_version: TetragonVersion,
    /// How audit-stage policies are written.
    pub audit_style: AuditStyle,
    /// Policy set label value (sanitised), if any.
    pub policy_set: Option<String>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            tetragon_version: TetragonVersion::DEFAULT,
            audit_style: AuditStyle::Post,
            policy_set: None,
        }
    }
}

/// Why a policy cannot be rendered as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// Blocking needs a workload to scope to; the findings named none.
    #[error(
        "{name}: the findings name no namespace, pod labels or image, so a blocking policy would cover every pod; it stays in audit"
    )]
    UnscopedBlock {
        /// Policy name.
        name: String,
    },
    /// The findings named a scope Kubernetes cannot express (an invalid namespace or label):
    /// blocking without it would cover more than the workload.
    #[error(
        "{name}: {reason}, so a blocking policy would cover more than the workload; it stays in audit"
    )]
    InexpressibleScope {
        /// Policy name.
        name: String,
        /// What cannot be expressed.
        reason: String,
    },
}

/// Why the blocking form of `key` cannot be rendered, if it cannot (for the workflow's state:
/// such a policy is refused promotion before a review is even queued).
pub fn block_refusal(key: &PolicyKey, version: TetragonVersion) -> Option<String> {
    let scope = Scope::of(&key.workload, version);
    if let Some(reason) = scope.dropped {
        return Some(reason);
    }
    scope
        .is_unscoped()
        .then(|| "its findings name no namespace, pod labels or image to scope it to".to_string())
}

/// The observed selector values of `evidence` for `category`: the values its design adds to
/// selectors beyond the category's own (credential-like addresses for IMDS, scanners by full
/// path, shells and netcats by full path, mining ports of 1024 and above and public addresses).
/// Bounded by [`qflows_workflows::cdr::evidence::OBSERVED_LIMIT`] per kind.
pub fn observed(category: Category, ev: &Evidence) -> Observed {
    let mut out = Observed::default();
    match category {
        Category::Imds => {
            for a in ev.addresses.iter().filter(|a| credential_like(a)) {
                if !CREDENTIAL_ENDPOINTS.contains(&a.as_str()) {
                    out.add_address(a);
                }
            }
        }
        Category::Scanning => {
            for p in ev.processes.iter().filter(|p| is_safe_path(p)) {
                let name = basename(p);
                let shell = SHELLS.iter().any(|s| basename(s) == name);
                let interpreter = INTERPRETERS.iter().any(|i| name.starts_with(i));
                let known = SCANNERS.iter().any(|s| p.ends_with(s));
                if !shell && !interpreter && !known {
                    out.add_binary(p);
                }
            }
        }
        Category::ReverseShell => {
            for p in ev.processes.iter().filter(|p| is_safe_path(p)) {
                let name = basename(p);
                let shell_or_netcat = SHELLS
                    .iter()
                    .chain(NETCATS.iter())
                    .any(|s| basename(s) == name);
                let known = SHELLS.contains(&p.as_str()) || NETCATS.contains(&p.as_str());
                if shell_or_netcat && !known {
                    out.add_binary(p);
                }
            }
        }
        Category::Mining => {
            for port in ev.ports.iter().filter(|p| **p >= 1024) {
                if !MINING_PORTS.iter().any(|range| port_in(range, *port)) {
                    out.add_port(*port);
                }
            }
            for a in &ev.addresses {
                if a.parse::<IpAddr>().is_ok_and(|ip| !is_private(&ip)) {
                    out.add_address(a);
                }
            }
        }
        Category::Escape | Category::Privesc => {}
    }
    out
}

/// Whether `port` is `range` (`3333` or `3333:3336`).
fn port_in(range: &str, port: u16) -> bool {
    match range.split_once(':') {
        Some((lo, hi)) => {
            lo.parse::<u16>().is_ok_and(|lo| port >= lo)
                && hi.parse::<u16>().is_ok_and(|hi| port <= hi)
        }
        None => range.parse::<u16>() == Ok(port),
    }
}

/// An absolute path Tetragon can match exactly (no commas: annotations are comma lists).
fn is_safe_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 255
        && !p.ends_with('/')
        && !p.contains(',')
        && !p.split('/').any(|seg| seg == "..")
        && p.bytes().all(|b| b.is_ascii_graphic())
}

/// Renders the policy for `key` in the given enforcement, treating every observed value as
/// approved (the offline `qflows policy generate`, whose output is files for review).
pub fn render(
    key: &PolicyKey,
    evidence: &Evidence,
    enforcement: Enforcement,
    opts: &RenderOptions,
) -> Result<TracingPolicy, RenderError> {
    let all = observed(key.category, evidence);
    render_with(key, evidence, enforcement, Some(&all), opts)
}

/// Renders the policy for `key`. The audit form's selectors carry every observed value; the
/// enforced form only those of `approved` that are still observed (none when `approved` is
/// `None`), and names the others in the annotation `qflows.io/observed-unreviewed`.
pub fn render_with(
    key: &PolicyKey,
    evidence: &Evidence,
    enforcement: Enforcement,
    approved: Option<&Observed>,
    opts: &RenderOptions,
) -> Result<TracingPolicy, RenderError> {
    let name = key.name();
    let scope = Scope::of(&key.workload, opts.tetragon_version);
    let blocking = enforcement == Enforcement::Enforce || opts.audit_style == AuditStyle::Monitor;
    if blocking && let Some(reason) = scope.dropped.clone() {
        return Err(RenderError::InexpressibleScope { name, reason });
    }
    if blocking && scope.is_unscoped() {
        return Err(RenderError::UnscopedBlock { name });
    }
    let (used, unreviewed) =
        used_and_unreviewed(observed(key.category, evidence), enforcement, approved);
    let design = design(key.category, &used, opts.tetragon_version);
    let (actions, options) =
        actions_and_options(blocking, enforcement, design.override_on_security_hook);
    let kprobes = design
        .hooks
        .into_iter()
        .map(|h| h.into_kprobe(actions, key.category))
        .collect();
    let labels = labels(key, evidence, enforcement, opts.policy_set.as_ref());
    let mut annotations = annotations(key, evidence);
    add_observed_annotations(&mut annotations, &used, &unreviewed);
    Ok(TracingPolicy {
        api_version: API_VERSION.into(),
        kind: if scope.namespace.is_some() {
            "TracingPolicyNamespaced".into()
        } else {
            "TracingPolicy".into()
        },
        metadata: Metadata {
            name,
            namespace: scope.namespace.clone(),
            labels,
            annotations,
        },
        spec: Spec {
            pod_selector: scope.pod_selector,
            container_selector: scope.container_selector,
            options,
            kprobes,
        },
    })
}

/// The observed values the selectors carry, and those left out for want of approval: the audit
/// form carries all of `all`; the enforced form only those of `approved` (none when `None`).
fn used_and_unreviewed(
    all: Observed,
    enforcement: Enforcement,
    approved: Option<&Observed>,
) -> (Observed, Observed) {
    match enforcement {
        Enforcement::Audit => (all, Observed::default()),
        Enforcement::Enforce => {
            let approved = approved.cloned().unwrap_or_default();
            let unreviewed = all.without(&approved);
            (all.without(&unreviewed), unreviewed)
        }
    }
}

/// The actions every selector gets, and the policy options they need: a blocking form runs under
/// `policy-mode` (`monitor` while in audit) and, when a `security_*` hook overrides, with
/// `disable-kprobe-multi`.
fn actions_and_options(
    blocking: bool,
    enforcement: Enforcement,
    override_on_security_hook: bool,
) -> (Actions, Vec<PolicyOption>) {
    let mut options = Vec::new();
    if !blocking {
        return (Actions::Audit, options);
    }
    if override_on_security_hook {
        options.push(option("disable-kprobe-multi", "1"));
    }
    let mode = match enforcement {
        Enforcement::Enforce => "enforce",
        Enforcement::Audit => "monitor",
    };
    options.push(option("policy-mode", mode));
    (Actions::Block, options)
}

/// The labels of a generated policy: managed-by, category, technique, priority, enforcement and,
/// if any, the policy set.
fn labels(
    key: &PolicyKey,
    evidence: &Evidence,
    enforcement: Enforcement,
    policy_set: Option<&String>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        ("qflows.io/category".into(), key.category.slug().into()),
        (
            "qflows.io/technique".into(),
            key.category.technique().into(),
        ),
        ("qflows.io/priority".into(), evidence.priority().into()),
        (
            ENFORCEMENT_LABEL.into(),
            match enforcement {
                Enforcement::Audit => "audit".into(),
                Enforcement::Enforce => "enforce".into(),
            },
        ),
    ]);
    if let Some(set) = policy_set {
        labels.insert(POLICY_SET_LABEL.into(), set.clone());
    }
    labels
}

/// Names the observed values the selectors carry (`used`) and those awaiting review.
fn add_observed_annotations(
    annotations: &mut BTreeMap<String, String>,
    used: &Observed,
    unreviewed: &Observed,
) {
    let mut put = |k: &str, v: String| annotate(annotations, k, v);
    put("observed-binaries", joined(&used.binaries));
    put("observed-ports", joined(&used.ports));
    put("observed-addresses", joined(&used.addresses));
    if !unreviewed.is_empty() {
        put("observed-unreviewed", unreviewed.describe());
    }
}

/// Sets the annotation `qflows.io/<key>` to `value`, unless `value` is empty.
fn annotate(annotations: &mut BTreeMap<String, String>, key: &str, value: String) {
    if !value.is_empty() {
        annotations.insert(format!("qflows.io/{key}"), value);
    }
}

fn option(name: &str, value: &str) -> PolicyOption {
    PolicyOption {
        name: name.into(),
        value: value.into(),
    }
}

fn joined<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn annotations(key: &PolicyKey, ev: &Evidence) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(
        "qflows.io/description".to_string(),
        description(key.category).to_string(),
    );
    a.insert(
        "qflows.io/finding-count".into(),
        ev.finding_count.to_string(),
    );
    let mut put = |k: &str, v: String| annotate(&mut a, k, v);
    put("finding-ids", joined(&ev.finding_ids));
    put("processes", joined(&ev.processes));
    put("addresses", joined(&ev.addresses));
    put("ports", joined(&ev.ports));
    put("techniques", joined(&ev.techniques));
    if let (Some(f), Some(l)) = (&ev.first_seen, &ev.last_seen) {
        put("window", format!("{f}/{l}"));
    }
    a
}

fn description(c: Category) -> &'static str {
    match c {
        Category::Imds => {
            "Connections to cloud credential endpoints (IMDS v4/v6, ECS task role, EKS Pod Identity)"
        }
        Category::Scanning => "Raw/packet sockets and network scanner executions",
        Category::Escape => "Namespace changes and mounts from inside a container",
        Category::Privesc => "setuid/setgid to root",
        Category::Mining => "Connections to crypto-mining pool ports and observed pool addresses",
        Category::ReverseShell => "Shells connecting out, and netcat-like tools executing shells",
    }
}

/// Where a policy applies.
struct Scope {
    namespace: Option<String>,
    pod_selector: Option<LabelSelector>,
    container_selector: Option<LabelSelector>,
    /// A namespace or label of the workload Kubernetes would refuse, left out of the scope (only
    /// acceptable for the audit form).
    dropped: Option<String>,
}

/// At most this many characters of an attacker-supplied value in a message.
fn shown(v: &str) -> String {
    let cut: String = v.chars().take(64).collect();
    format!("{cut:?}")
}

impl Scope {
    fn of(w: &Workload, version: TetragonVersion) -> Scope {
        let mut dropped = None;
        let labels: BTreeMap<String, String> = w
            .labels
            .iter()
            .filter(|(k, v)| {
                let ok = schema::is_label_key(k) && schema::is_label_value(v);
                if !ok && dropped.is_none() {
                    dropped = Some(format!(
                        "pod label {}={} is not a valid Kubernetes label",
                        shown(k),
                        shown(v)
                    ));
                }
                ok
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let namespace = w.namespace.clone().filter(|n| {
            let ok = schema::is_namespace_name(n);
            if !ok {
                dropped = Some(format!(
                    "namespace {} is not a valid Kubernetes namespace name",
                    shown(n)
                ));
            }
            ok
        });
        // `repo` in containerSelector arrived in v1.5; repos hold `/`, so matchExpressions.
        let container_selector = w
            .image_repository
            .as_ref()
            .filter(|_| version.at_least(1, 5))
            .map(|repo| LabelSelector {
                match_labels: BTreeMap::new(),
                match_expressions: vec![LabelRequirement {
                    key: "repo".into(),
                    operator: "In".into(),
                    values: repo_forms(repo),
                }],
            });
        Scope {
            namespace,
            // `{}` = every pod, never host processes.
            pod_selector: Some(LabelSelector {
                match_labels: labels,
                match_expressions: Vec::new(),
            }),
            container_selector,
            dropped,
        }
    }

    fn is_unscoped(&self) -> bool {
        self.namespace.is_none()
            && self
                .pod_selector
                .as_ref()
                .is_none_or(|p| p.match_labels.is_empty())
            && self.container_selector.is_none()
    }
}

/// Both spellings Tetragon may see for a repository: normalised (`docker.io/library/nginx`) and
/// as written in the pod spec (`nginx`).
fn repo_forms(repo: &str) -> Vec<String> {
    let mut forms = BTreeSet::from([repo.to_string()]);
    let first = repo.split('/').next().unwrap_or("");
    let has_host = repo.contains('/') && (first.contains('.') || first.contains(':'));
    if !has_host {
        let full = if repo.contains('/') {
            format!("docker.io/{repo}")
        } else {
            format!("docker.io/library/{repo}")
        };
        forms.insert(full);
    } else if let Some(short) = repo.strip_prefix("docker.io/library/") {
        forms.insert(short.to_string());
    } else if let Some(short) = repo.strip_prefix("docker.io/") {
        forms.insert(short.to_string());
    }
    forms.into_iter().collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Actions {
    Audit,
    Block,
}

/// A hook before actions are chosen.
struct Hook {
    call: &'static str,
    syscall: bool,
    args: Vec<Arg>,
    ignore_missing: bool,
    message: &'static str,
    /// Filters of each selector (actions are added per enforcement).
    selectors: Vec<Selector>,
    /// May this hook `Override` (syscalls and `security_*` functions)?
    can_override: bool,
}

impl Hook {
    fn into_kprobe(self, actions: Actions, category: Category) -> Kprobe {
        let match_actions = match actions {
            Actions::Audit => vec![MatchAction::post("1m")],
            Actions::Block if self.can_override => {
                vec![MatchAction::override_eperm(), MatchAction::sigkill()]
            }
            Actions::Block => vec![MatchAction::sigkill()],
        };
        Kprobe {
            call: self.call.into(),
            syscall: self.syscall,
            args: self.args,
            message: Some(format!("[{}] {}", category.technique(), self.message)),
            tags: vec![
                format!("mitre.{}", category.technique()),
                format!("qflows.{}", category.slug()),
            ],
            ignore: self.ignore_missing.then_some(Ignore {
                call_not_found: true,
            }),
            selectors: self
                .selectors
                .into_iter()
                .map(|mut s| {
                    s.match_actions = match_actions.clone();
                    s
                })
                .collect(),
        }
    }
}

struct Design {
    hooks: Vec<Hook>,
    /// A `security_*` kprobe uses Override: needs `disable-kprobe-multi`.
    override_on_security_hook: bool,
}

fn arg(index: u32, kind: &str, label: &str) -> Arg {
    Arg {
        index,
        kind: kind.into(),
        label: Some(label.into()),
    }
}

fn match_arg(index: u32, operator: &str, values: impl IntoIterator<Item = String>) -> MatchArg {
    MatchArg {
        index,
        operator: operator.into(),
        values: values.into_iter().collect(),
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Credential endpoints: EC2 IMDS (v4, v6, v4-mapped), ECS task credentials, EKS Pod Identity.
pub const CREDENTIAL_ENDPOINTS: [&str; 6] = [
    "169.254.169.254",
    "fd00:ec2::254",
    "::ffff:169.254.169.254",
    "169.254.170.2",
    "169.254.170.23",
    "fd00:ec2::23",
];

/// Stratum ports commonly used by mining pools (Falco's `miner_ports` minus generic ports).
pub const MINING_PORTS: [&str; 12] = [
    "3333:3336",
    "3357",
    "4444",
    "5555",
    "5556",
    "7777",
    "7778",
    "9999",
    "14433",
    "14444",
    "45560",
    "45700",
];

const PRIVATE_NETS: [&str; 9] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

const SCANNERS: [&str; 7] = [
    "/nmap",
    "/masscan",
    "/zmap",
    "/rustscan",
    "/naabu",
    "/unicornscan",
    "/hping3",
];

/// Interpreters (by basename prefix): an observed `python3.11` running a scanner script is the
/// workload's interpreter, not a scanner binary.
const INTERPRETERS: [&str; 6] = ["python", "perl", "ruby", "node", "java", "php"];

const SHELLS: [&str; 14] = [
    "/bin/sh",
    "/usr/bin/sh",
    "/bin/bash",
    "/usr/bin/bash",
    "/bin/dash",
    "/usr/bin/dash",
    "/bin/zsh",
    "/usr/bin/zsh",
    "/bin/ash",
    "/bin/ksh",
    "/usr/bin/ksh",
    "/bin/busybox",
    "/usr/bin/busybox",
    "/bin/mksh",
];

const NETCATS: [&str; 10] = [
    "/bin/nc",
    "/usr/bin/nc",
    "/bin/netcat",
    "/usr/bin/netcat",
    "/usr/bin/ncat",
    "/usr/bin/nc.openbsd",
    "/usr/bin/nc.traditional",
    "/bin/nc.openbsd",
    "/bin/nc.traditional",
    "/usr/bin/socat",
];

fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Addresses the findings saw that are credential-service-like (link-local, ECS/EKS, Alibaba
/// `100.100.100.200`): safe to add to the endpoint list.
fn credential_like(addr: &str) -> bool {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_link_local() || v4.octets() == [100, 100, 100, 200],
        Ok(IpAddr::V6(v6)) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || (v6.segments()[0] == 0xfd00 && v6.segments()[1] == 0x0ec2)
        }
        Err(_) => false,
    }
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The design of `category`, with the observed values `seen` (already filtered by [`observed`]
/// and, for the blocking form, cut to the approved ones).
fn design(category: Category, seen: &Observed, version: TetragonVersion) -> Design {
    match category {
        Category::Imds => imds(seen),
        Category::Scanning => scanning(seen),
        Category::Escape => escape(version),
        Category::Privesc => privesc(),
        Category::Mining => mining(seen),
        Category::ReverseShell => reverse_shell(seen),
    }
}

/// Outgoing connections (`security_socket_connect`, reading the destination address) that match
/// one of `selectors`; the blocking form may override the call.
fn connect_hook(message: &'static str, selectors: Vec<Selector>) -> Hook {
    Hook {
        call: "security_socket_connect",
        syscall: false,
        args: vec![arg(1, "sockaddr", "address")],
        ignore_missing: false,
        message,
        selectors,
        can_override: true,
    }
}

/// Program executions (`security_bprm_check`, reading the binary) that match one of
/// `selectors`; the blocking form may override the call.
fn exec_hook(message: &'static str, selectors: Vec<Selector>) -> Hook {
    Hook {
        call: "security_bprm_check",
        syscall: false,
        args: vec![arg(0, "linux_binprm", "binary")],
        ignore_missing: false,
        message,
        selectors,
        can_override: true,
    }
}

/// Connections to the credential endpoints, and to observed credential-like addresses.
fn imds(seen: &Observed) -> Design {
    let mut addrs: BTreeSet<String> = CREDENTIAL_ENDPOINTS.iter().map(|s| s.to_string()).collect();
    addrs.extend(seen.addresses.iter().cloned());
    Design {
        hooks: vec![connect_hook(
            "connect to a cloud credential endpoint",
            vec![Selector {
                match_args: vec![match_arg(1, "SAddr", addrs)],
                ..Default::default()
            }],
        )],
        override_on_security_hook: true,
    }
}

/// Raw and packet sockets from user space, and scanner executions.
fn scanning(seen: &Observed) -> Design {
    let scanners: Vec<String> = SCANNERS.iter().map(|s| s.to_string()).collect();
    // Known scanners by name wherever they are; observed binaries only by their full
    // path (`/tmp/gunicorn` never matches the app's `/usr/local/bin/gunicorn`).
    let mut exec_selectors = vec![Selector {
        match_args: vec![match_arg(0, "Postfix", scanners)],
        ..Default::default()
    }];
    if !seen.binaries.is_empty() {
        exec_selectors.push(Selector {
            match_args: vec![match_arg(0, "Equal", seen.binaries.iter().cloned())],
            ..Default::default()
        });
    }
    Design {
        hooks: vec![
            Hook {
                call: "security_socket_create",
                syscall: false,
                args: vec![
                    arg(0, "int", "family"),
                    arg(1, "int", "type"),
                    arg(3, "int", "kern"),
                ],
                ignore_missing: false,
                message: "raw or packet socket created",
                selectors: vec![
                    // SOCK_RAW (3) from user space.
                    Selector {
                        match_args: vec![
                            match_arg(1, "Equal", strs(&["3"])),
                            match_arg(3, "Equal", strs(&["0"])),
                        ],
                        ..Default::default()
                    },
                    // AF_PACKET (17) from user space.
                    Selector {
                        match_args: vec![
                            match_arg(0, "Equal", strs(&["17"])),
                            match_arg(3, "Equal", strs(&["0"])),
                        ],
                        ..Default::default()
                    },
                ],
                can_override: true,
            },
            exec_hook("network scanner executed", exec_selectors),
        ],
        override_on_security_hook: true,
    }
}

/// Namespace changes and mounts outside the host mount namespace (the syscalls themselves).
fn escape(version: TetragonVersion) -> Design {
    let mut calls = vec!["sys_setns", "sys_unshare", "sys_mount", "sys_pivot_root"];
    // Newer mount API calls: only with `ignore.callNotFound` (v1.5), since older kernels
    // lack them and the policy would fail to load.
    let newer = version.at_least(1, 5);
    if newer {
        calls.extend(["sys_fsmount", "sys_move_mount", "sys_open_tree"]);
    }
    let hooks = calls
        .into_iter()
        .enumerate()
        .map(|(i, call)| Hook {
            call,
            syscall: true,
            args: Vec::new(),
            ignore_missing: newer && i >= 4,
            message: "namespace change or mount from a container",
            selectors: vec![Selector {
                match_namespaces: vec![MatchNamespace {
                    namespace: "Mnt".into(),
                    operator: "NotIn".into(),
                    values: strs(&["host_ns"]),
                }],
                ..Default::default()
            }],
            can_override: true,
        })
        .collect();
    Design {
        hooks,
        override_on_security_hook: false,
    }
}

/// setuid/setgid family calls setting an ID to root (0).
fn privesc() -> Design {
    let to_root = |call: &'static str, indexes: &[u32], label: &'static str| Hook {
        call,
        syscall: true,
        args: indexes.iter().map(|i| arg(*i, "int", label)).collect(),
        ignore_missing: false,
        message: "set user or group ID to root",
        selectors: indexes
            .iter()
            .map(|i| Selector {
                match_args: vec![match_arg(*i, "Equal", strs(&["0"]))],
                ..Default::default()
            })
            .collect(),
        can_override: true,
    };
    Design {
        hooks: vec![
            to_root("sys_setuid", &[0], "uid"),
            to_root("sys_setgid", &[0], "gid"),
            to_root("sys_setreuid", &[0, 1], "uid"),
            to_root("sys_setresuid", &[0, 1, 2], "uid"),
            to_root("sys_setresgid", &[0, 1, 2], "gid"),
        ],
        override_on_security_hook: false,
    }
}

/// Connections to mining ports outside private networks, and to observed pool addresses.
fn mining(seen: &Observed) -> Design {
    let mut ports: BTreeSet<String> = MINING_PORTS.iter().map(|s| s.to_string()).collect();
    // Observed non-well-known ports join ([`observed`] leaves out 1-1023: 80, 443, …
    // would break normal traffic).
    ports.extend(seen.ports.iter().map(u16::to_string));
    let mut selectors = vec![Selector {
        match_args: vec![
            match_arg(1, "SPort", ports),
            match_arg(1, "NotSAddr", strs(&PRIVATE_NETS)),
        ],
        ..Default::default()
    }];
    let pools: BTreeSet<String> = seen.addresses.iter().cloned().collect();
    if !pools.is_empty() {
        selectors.push(Selector {
            match_args: vec![match_arg(1, "SAddr", pools)],
            ..Default::default()
        });
    }
    Design {
        hooks: vec![connect_hook(
            "connect to a mining pool port or an observed pool address",
            selectors,
        )],
        override_on_security_hook: true,
    }
}

/// Shells connecting out, and netcat-like tools executing a shell; observed shells and netcats
/// join by full path.
fn reverse_shell(seen: &Observed) -> Design {
    let mut shells: BTreeSet<String> = SHELLS.iter().map(|s| s.to_string()).collect();
    let mut netcats: BTreeSet<String> = NETCATS.iter().map(|s| s.to_string()).collect();
    for p in &seen.binaries {
        let name = basename(p);
        if SHELLS.iter().any(|s| basename(s) == name) {
            shells.insert(p.clone());
        } else if NETCATS.iter().any(|s| basename(s) == name) {
            netcats.insert(p.clone());
        }
    }
    let shell_names: BTreeSet<String> =
        shells.iter().map(|s| format!("/{}", basename(s))).collect();
    Design {
        hooks: vec![
            connect_hook(
                "shell connecting out",
                vec![Selector {
                    match_args: vec![
                        match_arg(1, "Family", strs(&["AF_INET", "AF_INET6"])),
                        match_arg(1, "NotSAddr", strs(&["127.0.0.0/8", "::1/128"])),
                    ],
                    match_binaries: vec![MatchBinaries {
                        operator: "In".into(),
                        values: shells.into_iter().collect(),
                    }],
                    ..Default::default()
                }],
            ),
            exec_hook(
                "netcat-like tool executing a shell",
                vec![Selector {
                    match_args: vec![match_arg(0, "Postfix", shell_names)],
                    match_binaries: vec![MatchBinaries {
                        operator: "In".into(),
                        values: netcats.into_iter().collect(),
                    }],
                    ..Default::default()
                }],
            ),
        ],
        override_on_security_hook: true,
    }
}

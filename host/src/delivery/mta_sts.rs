//! SMTP MTA Strict Transport Security (RFC 8461): a domain that publishes a
//! `_mta-sts` TXT record and a policy at
//! `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` says which MX hosts are
//! its own and that they must be reached over TLS with a valid certificate.
//! Policies are cached until their `max_age` and fetched again when the TXT
//! record's `id` changes; a cached policy outlives a failed fetch, so an
//! attacker who blocks the fetch does not lift it. The cache is kept in a
//! file too, so that it also outlives a restart (§5.1).

use super::https;
use super::tls_report::TlsFailure;
use crate::capabilities::Dns;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mail_auth::common::parse::TxtRecordParser;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// The longest policy read (RFC 8461 §3.3 suggests 64 KiB).
const MAX_POLICY: usize = 64 * 1024;
/// How long fetching a policy may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a policy is kept (RFC 8461 §3.2: at most a year).
const MAX_AGE_CAP: Duration = Duration::from_secs(31_557_600);

/// What a policy asks of senders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to matching MX hosts, over verified TLS.
    Enforce,
    /// Report what would fail, deliver as usual.
    Testing,
    /// The domain has withdrawn its policy.
    None,
}

/// A domain's policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// What it asks.
    pub mode: Mode,
    /// The MX host patterns (`mx.example.com`, `*.example.net`), lower-case.
    pub mx: Vec<String>,
    /// How long it may be cached.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Policy {
    /// The policy as its file's lines (TLS reports quote them).
    pub fn lines(&self) -> Vec<String> {
        let mode = match self.mode {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        };
        let mut lines = vec!["version: STSv1".to_string(), format!("mode: {mode}")];
        lines.extend(self.mx.iter().map(|mx| format!("mx: {mx}")));
        lines.push(format!("max_age: {}", self.max_age.as_secs()));
        lines
    }

    /// Parses a policy file (RFC 8461 §3.2): `key: value` lines.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_string()),
                "mode" => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(format!("unknown mode {other:?}")),
                    })
                }
                "max_age" => {
                    let seconds: u64 = value.parse().map_err(|_| format!("max_age {value:?}"))?;
                    max_age = Some(Duration::from_secs(seconds).min(MAX_AGE_CAP));
                }
                "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err("no version: STSv1".into());
        }
        let mode = mode.ok_or("no mode")?;
        let max_age = max_age.ok_or("no max_age")?;
        if mode != Mode::None && mx.is_empty() {
            return Err("no mx".into());
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// Whether the MX host `host` is one the policy names (a `*.` pattern
    /// stands for exactly one label).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *pattern == host,
        })
    }
}

/// The `id` of a domain's `_mta-sts` TXT record (parsed by mail-auth),
/// when it has exactly one valid record (RFC 8461 §3.1: more than one
/// means no policy).
fn record_id(records: &[String]) -> Option<String> {
    let valid: Vec<&String> = records.iter().filter(|r| r.starts_with("v=STSv1")).collect();
    let [record] = valid.as_slice() else {
        return None;
    };
    mail_auth::mta_sts::MtaSts::parse(record.as_bytes())
        .ok()
        .map(|r| r.id)
        .filter(|id| !id.is_empty())
}

struct Cached {
    id: String,
    policy: Arc<Policy>,
    until: Instant,
}

/// A cached policy as the cache file keeps it.
#[derive(Serialize, Deserialize)]
struct Saved {
    id: String,
    policy: Policy,
    /// When it expires, in seconds since the Unix epoch.
    expires: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The unexpired policies of the cache file at `path`; none when it is
/// missing or unreadable (logged: the policies are fetched again).
fn load(path: &Path) -> HashMap<String, Cached> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "MTA-STS policy cache not read");
            return HashMap::new();
        }
    };
    let saved: HashMap<String, Saved> = match serde_json::from_str(&text) {
        Ok(saved) => saved,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "MTA-STS policy cache not read");
            return HashMap::new();
        }
    };
    let (now, unix) = (Instant::now(), unix_now());
    let cache: HashMap<String, Cached> = saved
        .into_iter()
        .filter(|(_, s)| s.expires > unix)
        .map(|(domain, s)| {
            let until = now + Duration::from_secs(s.expires - unix).min(MAX_AGE_CAP);
            let policy = Arc::new(s.policy);
            (
                domain,
                Cached {
                    id: s.id,
                    policy,
                    until,
                },
            )
        })
        .collect();
    info!(path = %path.display(), policies = cache.len(), "MTA-STS policy cache loaded");
    cache
}

/// The MTA-STS policies of destination domains, fetched and cached.
pub struct MtaSts {
    /// The HTTPS port of policy hosts (443; tests use others).
    port: u16,
    /// Whether policy hosts may resolve to loopback addresses (tests).
    allow_local: bool,
    cache: Mutex<HashMap<String, Cached>>,
    /// Where the cache is kept across restarts.
    file: Option<PathBuf>,
    /// Taken while the file is written, so that writes land in order.
    saving: tokio::sync::Mutex<()>,
}

impl MtaSts {
    /// Policies fetched from `port` of their hosts, cached in memory and,
    /// with a `file`, on disk (loaded now).
    pub fn new(port: u16, allow_local: bool, file: Option<PathBuf>) -> MtaSts {
        let cache = file.as_deref().map(load).unwrap_or_default();
        MtaSts {
            port,
            allow_local,
            cache: Mutex::new(cache),
            file,
            saving: tokio::sync::Mutex::new(()),
        }
    }

    /// Writes the cache to its file (a new file renamed over the old one);
    /// a failure is logged and costs only a fetch after a restart.
    async fn save(&self) {
        let Some(path) = &self.file else {
            return;
        };
        let _writing = self.saving.lock().await;
        let text = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let (now, unix) = (Instant::now(), unix_now());
            let saved: HashMap<&String, Saved> = cache
                .iter()
                .filter(|(_, c)| c.until > now)
                .map(|(domain, c)| {
                    let saved = Saved {
                        id: c.id.clone(),
                        policy: (*c.policy).clone(),
                        expires: unix + (c.until - now).as_secs(),
                    };
                    (domain, saved)
                })
                .collect();
            serde_json::to_string_pretty(&saved)
        };
        let temp = path.with_extension("json.tmp");
        let written = match text {
            Ok(text) => match tokio::fs::write(&temp, text).await {
                Ok(()) => tokio::fs::rename(&temp, path).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e.into()),
        };
        if let Err(e) = written {
            warn!(path = %path.display(), error = %e, "MTA-STS policy cache not written");
        }
    }

    fn cached(&self, domain: &str) -> Option<(String, Arc<Policy>, bool)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(domain)
            .map(|c| (c.id.clone(), c.policy.clone(), c.until > Instant::now()))
    }

    /// The policy for `domain`, if it has one (cached, or fetched now),
    /// looked up through `dns`, and why a fetch it needed failed, if one did
    /// (for TLS reports).
    pub async fn policy(&self, dns: &Dns, domain: &str) -> (Option<Arc<Policy>>, Option<TlsFailure>) {
        let domain = domain.to_ascii_lowercase();
        let cached = self.cached(&domain);
        // What stands when nothing newer can be had: the cached policy, until it expires.
        let still_cached = || {
            cached
                .as_ref()
                .filter(|(_, _, fresh)| *fresh)
                .map(|(_, p, _)| p.clone())
        };
        let id = match dns.txt(&format!("_mta-sts.{domain}")).await {
            Ok(records) => record_id(&records),
            // A DNS failure keeps whatever was cached.
            Err(_) => return (still_cached(), None),
        };
        let Some(id) = id else {
            // No record: a cached policy still holds until it expires (§5.1).
            return (still_cached(), None);
        };
        if let Some((cached_id, policy, true)) = &cached
            && *cached_id == id
        {
            return (Some(policy.clone()), None);
        }
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch(dns, &domain)).await {
            Ok(Ok(policy)) => {
                info!(%domain, %id, mode = ?policy.mode, mx = %policy.mx.join(","), "MTA-STS policy fetched");
                let policy = Arc::new(policy);
                let entry = Cached {
                    id,
                    policy: policy.clone(),
                    until: Instant::now() + policy.max_age,
                };
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(domain, entry);
                self.save().await;
                (Some(policy), None)
            }
            Ok(Err((e, failure))) => {
                warn!(%domain, error = %e, "MTA-STS policy could not be fetched; keeping any cached one");
                (still_cached(), Some(failure))
            }
            Err(_) => {
                warn!(%domain, "MTA-STS policy fetch timed out; keeping any cached one");
                (still_cached(), Some(TlsFailure::StsPolicyFetchError))
            }
        }
    }

    /// Fetches and parses `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`
    /// over verified TLS, without following redirects (§3.3). A failure
    /// comes with its kind for TLS reports.
    async fn fetch(&self, dns: &Dns, domain: &str) -> Result<Policy, (String, TlsFailure)> {
        let unfetched = |e: String| (e, TlsFailure::StsPolicyFetchError);
        let invalid = |e: String| (e, TlsFailure::StsPolicyInvalid);
        let host = format!("mta-sts.{domain}");
        let request = hyper::Request::get("/.well-known/mta-sts.txt")
            .header(hyper::header::HOST, host.as_str())
            .body(Full::<Bytes>::default())
            .map_err(|e| unfetched(e.to_string()))?;
        let response = https::exchange(dns, self.allow_local, &host, self.port, request)
            .await
            .map_err(|e| match e.tls {
                true => (e.message, TlsFailure::StsWebpkiInvalid),
                false => unfetched(e.message),
            })?;
        if response.status() != hyper::StatusCode::OK {
            return Err(unfetched(format!("{host} answered {}", response.status())));
        }
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.to_ascii_lowercase().starts_with("text/plain") {
            return Err(invalid(format!("{host} sent {content_type:?}, not text/plain")));
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_POLICY)
            .collect()
            .await
            .map_err(|e| unfetched(format!("reading the policy from {host}: {e}")))?
            .to_bytes();
        Policy::parse(&String::from_utf8_lossy(&body)).map_err(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_match_mx_hosts() {
        let policy = Policy::parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\nmax_age: 86400\r\n",
        )
        .unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.max_age, Duration::from_secs(86400));
        assert!(policy.allows("MAIL.example.com."));
        assert!(policy.allows("mx1.example.net"));
        assert!(!policy.allows("example.net"), "a wildcard needs one label");
        assert!(!policy.allows("a.b.example.net"), "and only one");
        assert_eq!(
            policy.lines(),
            [
                "version: STSv1",
                "mode: enforce",
                "mx: mail.example.com",
                "mx: *.example.net",
                "max_age: 86400"
            ]
        );
        assert!(!policy.allows("mail.example.com.evil.test"));
        let long = Policy::parse("version: STSv1\nmode: testing\nmx: a.test\nmax_age: 99999999999\n").unwrap();
        assert_eq!(long.max_age, MAX_AGE_CAP);
        assert_eq!(
            Policy::parse("version: STSv1\nmode: none\nmax_age: 1\n").unwrap().mode,
            Mode::None
        );
        for bad in [
            "mode: enforce\nmx: a.test\nmax_age: 1\n",
            "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.test\n",
            "<html>not found</html>",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_cache_file_keeps_unexpired_policies_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mta-sts.json");
        let policy = Policy::parse("version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 86400\n").unwrap();
        let first = MtaSts::new(443, false, Some(file.clone()));
        let entries = [
            ("a.test", "7", Duration::from_secs(3600)),
            ("old.test", "1", Duration::ZERO),
        ];
        for (domain, id, left) in entries {
            let entry = Cached {
                id: id.into(),
                policy: Arc::new(policy.clone()),
                until: Instant::now() + left,
            };
            first.cache.lock().unwrap().insert(domain.into(), entry);
        }
        first.save().await;
        let second = MtaSts::new(443, false, Some(file.clone()));
        let (id, kept, fresh) = second.cached("a.test").expect("kept");
        assert_eq!((id.as_str(), &*kept, fresh), ("7", &policy, true));
        assert!(second.cached("old.test").is_none(), "expired policies are not kept");
        std::fs::write(&file, "{ torn").unwrap();
        assert!(
            MtaSts::new(443, false, Some(file)).cached("a.test").is_none(),
            "a torn file is fetched again"
        );
    }

    #[test]
    fn the_txt_record_gives_the_id_when_there_is_exactly_one() {
        let record = |texts: &[&str]| record_id(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        assert_eq!(
            record(&["v=STSv1; id=20260101T000000;"]).as_deref(),
            Some("20260101T000000")
        );
        assert_eq!(record(&["v=spf1 -all", "v=STSv1;id=7"]).as_deref(), Some("7"));
        assert_eq!(record(&["v=STSv1; id=1", "v=STSv1; id=2"]), None);
        assert_eq!(record(&["v=STSv1;"]), None);
        assert_eq!(record(&[]), None);
    }
}

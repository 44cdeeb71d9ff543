//! Sending TLS reports (RFC 8460): each session's TLS is counted through
//! a [`TlsSeen`] handed to the client, and the reports of the counts are
//! queued as mail or posted. What is counted and how a report reads is
//! `delivery::tls_report`'s.

use super::super::client::TlsSeen;
use super::super::https;
use super::super::mta_sts::Policy;
use super::super::tls_report::{self, TlsFailure, TlsPolicy, TlsSession};
use super::Outbound;
use super::reports::ReportKind;
use crate::capabilities::CapabilityError;
use crate::queue::now_ms;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How long posting a TLS report may take.
const REPORT_POST_TIMEOUT: Duration = Duration::from_secs(30);

const TLS: ReportKind = ReportKind::Tls;

/// An MTA-STS policy as TLS reports name it.
pub(super) fn sts_policy(policy: &Policy) -> TlsPolicy {
    TlsPolicy::Sts {
        lines: policy.lines(),
        mx: policy.mx.clone(),
    }
}

impl Outbound {
    /// Counts sessions with `host` (at `ip`) of `domain` under `policy`
    /// for TLS reports; `None` when reports are off.
    pub(super) fn tls_seen(&self, domain: &str, policy: TlsPolicy, host: &str, ip: Option<IpAddr>) -> Option<TlsSeen> {
        let reports = self.inner.tls_reports.clone()?;
        let session = TlsSession {
            domain: domain.to_string(),
            policy,
            mx_host: host.to_string(),
            receiving_ip: ip,
            failure: None,
        };
        Some(TlsSeen(Arc::new(move |failure| {
            reports.record(
                &TlsSession {
                    failure,
                    ..session.clone()
                },
                now_ms(),
            );
        })))
    }

    /// Counts a failure with `host` of `domain` under `policy` that came
    /// before any session (a policy that could not be had).
    pub(super) fn tls_failed(&self, domain: &str, policy: TlsPolicy, host: &str, failure: TlsFailure) {
        if let Some(reports) = &self.inner.tls_reports {
            let session = TlsSession {
                domain: domain.to_string(),
                policy,
                mx_host: host.to_string(),
                receiving_ip: None,
                failure: Some(failure),
            };
            reports.record(&session, now_ms());
        }
    }

    /// Sends the TLS reports that are due (with `now`, also those of the
    /// day so far) and saves the counts; returns how many were queued as
    /// mail and how many posted (`None` when reports are off).
    pub async fn send_tls_reports(&self, now: bool) -> Option<(usize, usize)> {
        let reports = self.inner.tls_reports.clone()?;
        let (mut queued, mut posted) = (0, 0);
        for period in reports.take_due(now_ms(), now) {
            let mut later = Vec::new();
            for domain in period.domains() {
                let name = format!("_smtp._tls.{domain}");
                let record = match self.inner.dns.txt(&name).await {
                    Ok(texts) => tls_report::tlsrpt_record(&texts),
                    Err(CapabilityError::NotFound) => None,
                    Err(e) => {
                        warn!(%domain, error = %e, "TLS report not sent yet: its TLSRPT record could not be looked up");
                        TLS.count("deferred");
                        later.push(domain);
                        continue;
                    }
                };
                let Some(record) = record else {
                    continue;
                };
                for (url, body) in reports.uploads(&period, &domain, &record) {
                    match tokio::time::timeout(REPORT_POST_TIMEOUT, self.post_tls_report(&url, body)).await {
                        Ok(Ok(())) => {
                            info!(%domain, %url, "TLS report posted");
                            TLS.count("posted");
                            posted += 1;
                        }
                        Ok(Err(e)) => {
                            warn!(%domain, %url, error = %e, "TLS report not posted");
                            TLS.count("failed");
                        }
                        Err(_) => {
                            warn!(%domain, %url, "TLS report not posted: timed out");
                            TLS.count("failed");
                        }
                    }
                }
                let Some(mail) = reports.mail(&period, &domain, &record) else {
                    continue;
                };
                if self.queue_daily_report(TLS, &domain, mail).await {
                    queued += 1;
                }
            }
            reports.retry_later(period, &later, now_ms());
        }
        self.blocking(|o| o.save_report_counts()).await;
        Some((queued, posted))
    }

    /// Posts a TLS report (gzip JSON) to an `https:` address of a domain's
    /// `rua` (RFC 8460 §5.2): any 2xx is success.
    async fn post_tls_report(&self, url: &str, body: Vec<u8>) -> Result<(), String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let host = uri.host().ok_or_else(|| format!("{url:?} names no host"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, uri.authority().map_or(host, |a| a.as_str()))
            .header(hyper::header::CONTENT_TYPE, "application/tlsrpt+gzip")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let port = uri.port_u16().unwrap_or(443);
        let allow_local = self.inner.settings.route.allow_local;
        let response = https::exchange(&self.inner.dns, allow_local, host, port, request)
            .await
            .map_err(|e| e.message)?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(format!("{host} answered {status}")),
        }
    }
}

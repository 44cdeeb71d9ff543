//! LDAP directories (`[ldap.NAME]`, grant `ldap:NAME`), through the `ldap3`
//! crate. Searches share one connection per directory, bound as the
//! configured account and opened again when it fails; LDAP multiplexes
//! operations, so concurrent searches do not wait for each other. A
//! password check is a simple bind as the user on a connection of its own,
//! since a bind changes who a connection is.

use super::CapabilityError;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};

/// RFC 4511 result codes the directory answers with.
mod code {
    /// The search found more than the size limit; the entries so far came.
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    /// The base of a search does not exist.
    pub const NO_SUCH_OBJECT: u32 = 32;
    /// A bind with a wrong password or an unknown DN.
    pub const INVALID_CREDENTIALS: u32 = 49;
}

/// How to reach a directory and search it: `[ldap.NAME]`.
pub use waraka_config::LdapConfig;

/// One entry found: its DN and the attributes asked for, by name (as the
/// directory spells them), with their values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's distinguished name.
    pub dn: String,
    /// The attributes asked for, sorted by name.
    pub attributes: Vec<(String, Vec<String>)>,
}

/// A directory and its shared search connection.
pub struct Directory {
    settings: LdapConfig,
    shared: tokio::sync::Mutex<Option<Ldap>>,
}

fn failed(what: &str, e: LdapError) -> CapabilityError {
    match e {
        LdapError::FilterParsing => CapabilityError::Invalid("the filter is not an LDAP filter (RFC 4515)".into()),
        LdapError::Timeout { .. } => CapabilityError::Backend(format!("ldap {what}: no answer in time")),
        e => CapabilityError::Backend(format!("ldap {what}: {e}")),
    }
}

/// Whether `e` says the connection is gone (then a new one may succeed).
fn connection_lost(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::Io { .. } | LdapError::OpSend { .. } | LdapError::ResultRecv { .. } | LdapError::EndOfStream
    )
}

impl Directory {
    /// A directory reached with `settings`; nothing connects before the first call.
    pub fn new(settings: LdapConfig) -> Directory {
        Directory {
            settings,
            shared: tokio::sync::Mutex::new(None),
        }
    }

    /// A new connection, not bound.
    async fn connect(&self) -> Result<Ldap, CapabilityError> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.settings.timeout)
            .set_starttls(self.settings.starttls);
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.settings.url)
            .await
            .map_err(|e| failed("connect", e))?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// The shared search connection, opened and bound when there is none
    /// or it was closed.
    async fn search_connection(&self) -> Result<Ldap, CapabilityError> {
        let mut shared = self.shared.lock().await;
        if let Some(ldap) = shared.as_mut()
            && !ldap.is_closed()
        {
            return Ok(ldap.clone());
        }
        let mut ldap = self.connect().await?;
        if let Some(dn) = &self.settings.bind_dn {
            let password = self.settings.bind_password.as_deref().unwrap_or_default();
            let result = ldap
                .with_timeout(self.settings.timeout)
                .simple_bind(dn, password)
                .await
                .map_err(|e| failed("bind", e))?;
            if result.rc != 0 {
                return Err(CapabilityError::Backend(format!("ldap bind as {dn}: {result}")));
            }
        }
        *shared = Some(ldap.clone());
        Ok(ldap)
    }

    /// The entries under `base` (the directory's `base` when empty) that
    /// match `filter`, with `attributes` (none: only the DN). A base that
    /// does not exist finds nothing; past `max_entries` the rest is left out.
    pub async fn search(&self, base: &str, filter: &str, attributes: &[String]) -> Result<Vec<Entry>, CapabilityError> {
        let base = if base.is_empty() {
            self.settings.base.as_str()
        } else {
            base
        };
        // RFC 4511 4.5.1.8: "1.1" asks for no attributes.
        let wanted: Vec<&str> = match attributes.is_empty() {
            true => vec!["1.1"],
            false => attributes.iter().map(String::as_str).collect(),
        };
        let mut retried = false;
        let (entries, result) = loop {
            let mut ldap = self.search_connection().await?;
            let found = ldap
                .with_timeout(self.settings.timeout)
                .with_search_options(SearchOptions::new().sizelimit(self.settings.max_entries as i32))
                .search(base, Scope::Subtree, filter, &wanted)
                .await;
            match found {
                Ok(found) => break (found.0, found.1),
                Err(e) if connection_lost(&e) && !std::mem::replace(&mut retried, true) => {
                    tracing::debug!("ldap {}: connection lost ({e}), connecting again", self.settings.url);
                    *self.shared.lock().await = None;
                }
                Err(e) => return Err(failed("search", e)),
            }
        };
        match result.rc {
            0 => {}
            code::SIZE_LIMIT_EXCEEDED => {
                tracing::info!(%filter, "ldap search: more than {} entries, the rest left out", self.settings.max_entries)
            }
            code::NO_SUCH_OBJECT => return Ok(Vec::new()),
            _ => {
                return Err(CapabilityError::Backend(format!(
                    "ldap search under {base:?}: {result}"
                )));
            }
        }
        entries
            .into_iter()
            .take(self.settings.max_entries as usize)
            .map(|raw| {
                // `construct` panics on an entry that is not BER it understands.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(raw)))
                    .map_err(|_| CapabilityError::Backend("ldap search: an entry the client cannot read".into()))
                    .map(|entry| {
                        let mut attributes: Vec<_> = entry.attrs.into_iter().collect();
                        attributes.sort();
                        Entry {
                            dn: entry.dn,
                            attributes,
                        }
                    })
            })
            .collect()
    }

    /// Whether `password` is the password of the entry `dn`: a simple bind
    /// as it. An empty DN or password is `false` without asking: a bind
    /// with an empty password is an unauthenticated bind, which servers
    /// accept (RFC 4513 5.1.2).
    pub async fn check_password(&self, dn: &str, password: &str) -> Result<bool, CapabilityError> {
        if dn.is_empty() || password.is_empty() {
            return Ok(false);
        }
        let mut ldap = self.connect().await?;
        let result = ldap
            .with_timeout(self.settings.timeout)
            .simple_bind(dn, password)
            .await
            .map_err(|e| failed("bind", e));
        let _ = ldap.unbind().await;
        let result = result?;
        match result.rc {
            0 => Ok(true),
            code::INVALID_CREDENTIALS | code::NO_SUCH_OBJECT => Ok(false),
            _ => Err(CapabilityError::Backend(format!("ldap bind as {dn}: {result}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn nowhere() -> Directory {
        Directory::new(LdapConfig {
            url: "ldap://127.0.0.1:1".into(),
            starttls: false,
            bind_dn: None,
            bind_password: None,
            base: "dc=example,dc=com".into(),
            timeout: Duration::from_secs(2),
            max_entries: 10,
        })
    }

    #[tokio::test]
    async fn empty_passwords_are_refused_without_asking() {
        // The directory is unreachable: an answer means nothing was asked.
        assert_eq!(nowhere().check_password("uid=a,dc=example,dc=com", "").await, Ok(false));
        assert_eq!(nowhere().check_password("", "secret").await, Ok(false));
    }

    #[tokio::test]
    async fn an_unreachable_directory_is_a_backend_error() {
        let searched = nowhere().search("", "(uid=a)", &[]).await;
        assert!(matches!(searched, Err(CapabilityError::Backend(_))), "{searched:?}");
        let checked = nowhere().check_password("uid=a,dc=example,dc=com", "pw").await;
        assert!(matches!(checked, Err(CapabilityError::Backend(_))), "{checked:?}");
    }
}

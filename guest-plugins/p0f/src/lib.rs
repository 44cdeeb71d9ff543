//! `p0f`: what the client's TCP connection says of the machine behind it —
//! its operating system, how many hops away it is, its link, whether
//! several hosts share its address — as the p0f daemon saw it (the `p0f`
//! capability: p0f's API socket), as Haraka's `p0f`. At connect the
//! findings become connection notes (`p0f.os_name`, …) for `karma` and the
//! log; received mail gets an `X-Waraka-p0f` header field in Haraka's
//! format. Nothing is refused. Settings: `config/p0f.ini`.

use waraka_plugin::{Hook, Plugin, Scope, Settings, Verdict, notes, p0f};

const SETTINGS: &str = "p0f.ini";

struct P0f;

/// The connection notes of a fingerprint, in the order the header gives them.
fn notes_of(seen: &p0f::Fingerprint) -> Vec<(&'static str, String)> {
    let os = [seen.os_name.as_str(), seen.os_flavor.as_str()]
        .iter()
        .filter(|part| !part.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let mut notes = vec![
        ("p0f.os", os),
        ("p0f.os_name", seen.os_name.clone()),
        ("p0f.os_flavor", seen.os_flavor.clone()),
        ("p0f.link_type", seen.link_type.clone()),
        ("p0f.total_conn", seen.total_connections.to_string()),
        (
            "p0f.shared_ip",
            if seen.last_nat.is_some() { "Y" } else { "N" }.to_string(),
        ),
    ];
    if let Some(distance) = seen.distance {
        notes.push(("p0f.distance", distance.to_string()));
    }
    if let Some(minutes) = seen.uptime_minutes {
        notes.push(("p0f.uptime", minutes.to_string()));
    }
    notes.retain(|(_, value)| !value.is_empty());
    notes
}

/// Haraka's `X-Haraka-p0f` value: `os="…" link_type="…" distance=N
/// total_conn=N shared_ip=Y|N`, from the connection's notes.
fn header_value() -> Option<String> {
    let note = |key: &str| notes::get(Scope::Connection, key);
    let os = note("p0f.os")?;
    let quoted = |text: String| format!("\"{}\"", text.replace(['"', '\\'], ""));
    let mut fields = vec![format!("os={}", quoted(os))];
    if let Some(link) = note("p0f.link_type") {
        fields.push(format!("link_type={}", quoted(link)));
    }
    for key in ["distance", "total_conn", "shared_ip"] {
        if let Some(value) = note(&format!("p0f.{key}")) {
            fields.push(format!("{key}={value}"));
        }
    }
    Some(fields.join(" "))
}

impl Plugin for P0f {
    const NAME: &'static str = "p0f";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Connect, Hook::DataPost];

    fn connect() -> Verdict {
        let settings = Settings::load(SETTINGS);
        let Some(ip) = settings.client_to_check() else {
            return Verdict::Cont;
        };
        let seen = match p0f::query(&ip.to_string()) {
            Ok(Some(seen)) => seen,
            Ok(None) => {
                waraka_plugin::debug!("p0f has not seen {ip}");
                return Verdict::Cont;
            }
            Err(e) => {
                waraka_plugin::warn!("asking p0f about {ip} failed: {e:?}");
                return Verdict::Cont;
            }
        };
        let notes = notes_of(&seen);
        for (key, value) in &notes {
            waraka_plugin::note_connection(key, value);
        }
        let summary: Vec<String> = notes.iter().map(|(key, value)| format!("{key}={value}")).collect();
        waraka_plugin::info!("{ip}: {}", summary.join(" "));
        Verdict::Cont
    }

    fn data_post() -> Verdict {
        if !Settings::load(SETTINGS).bool("add_header", true) {
            return Verdict::Cont;
        }
        if let Some(value) = header_value() {
            waraka_plugin::replace_header("X-Waraka-p0f", &value);
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(P0f);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_becomes_notes_without_empty_ones() {
        let seen = p0f::Fingerprint {
            os_name: "Linux".into(),
            os_flavor: "2.2.x-3.x".into(),
            os_match: String::new(),
            distance: Some(0),
            link_type: String::new(),
            total_connections: 2,
            uptime_minutes: None,
            last_nat: Some(1_700_000_000),
        };
        assert_eq!(
            notes_of(&seen),
            [
                ("p0f.os", "Linux 2.2.x-3.x".to_string()),
                ("p0f.os_name", "Linux".into()),
                ("p0f.os_flavor", "2.2.x-3.x".into()),
                ("p0f.total_conn", "2".into()),
                ("p0f.shared_ip", "Y".into()),
                ("p0f.distance", "0".into()),
            ]
        );
    }
}

//! `geoip`: where the client is — its country, continent, region, city,
//! network and distance from this server — from the `[geoip]` databases
//! (the `geoip` capability: MaxMind's GeoLite2/GeoIP2 or DB-IP files), as
//! Haraka's `geoip`. At connect the findings become connection notes
//! (`geoip.country`, …) for `karma` and the log; received mail gets an
//! `X-Waraka-GeoIP` header field. With `deny_countries` or
//! `allow_countries` the clients of some countries may not send mail here:
//! refused at MAIL FROM unless they authenticated or may relay, so a user
//! abroad still sends through the submission port. Settings:
//! `config/geoip.ini`.

use waraka_plugin::{Address, Hook, Plugin, Scope, Settings, Verdict, geoip, notes, session};

const SETTINGS: &str = "geoip.ini";

/// The mean radius of the Earth, in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0;

struct GeoIp;

/// The great-circle distance between two points (degrees), in kilometres.
fn distance_km((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let dphi = (lat2 - lat1).to_radians();
    let dlambda = (lon2 - lon1).to_radians();
    let a = (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
}

fn coordinates(location: &geoip::Location) -> Option<(f64, f64)> {
    location.latitude.zip(location.longitude)
}

/// This server's place: `latitude` and `longitude`, else where the
/// databases put `public_ip`.
fn here(settings: &Settings) -> Option<(f64, f64)> {
    let configured = settings
        .get("latitude")
        .and_then(|v| v.parse().ok())
        .zip(settings.get("longitude").and_then(|v| v.parse().ok()));
    configured.or_else(|| {
        let ip = settings.get("public_ip").filter(|ip| !ip.is_empty())?;
        geoip::lookup(&ip).ok().flatten().as_ref().and_then(coordinates)
    })
}

/// The notes of what the databases know of the client.
fn notes_of(location: &geoip::Location) -> Vec<(&'static str, String)> {
    let text = [
        ("geoip.country", &location.country),
        ("geoip.continent", &location.continent),
        ("geoip.region", &location.region),
        ("geoip.city", &location.city),
        ("geoip.org", &location.as_organization),
    ];
    let mut notes: Vec<(&'static str, String)> = text
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| (key, value.clone()))
        .collect();
    if let Some(asn) = location.asn {
        notes.push(("geoip.asn", asn.to_string()));
    }
    notes
}

/// `US, WA, Seattle, 1319km`: what is known, most general first.
fn summary(parts: &[Option<String>]) -> String {
    parts
        .iter()
        .flatten()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

fn connection_note(key: &str) -> Option<String> {
    notes::get(Scope::Connection, key)
}

/// Whether the clients of `country` may send mail here: not listed in
/// `deny_countries`, and listed in `allow_countries` when that names any.
fn country_allowed(settings: &Settings, country: &str) -> bool {
    let listed = |key: &str| settings.list(key).iter().any(|c| c.eq_ignore_ascii_case(country));
    let allowed = settings.list("allow_countries");
    !listed("deny_countries") && (allowed.is_empty() || listed("allow_countries"))
}

impl Plugin for GeoIp {
    const NAME: &'static str = "geoip";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Connect, Hook::Mail, Hook::DataPost];

    fn connect() -> Verdict {
        let settings = Settings::load(SETTINGS);
        let Some(ip) = settings.client_to_check() else {
            return Verdict::Cont;
        };
        let location = match geoip::lookup(&ip.to_string()) {
            Ok(Some(location)) => location,
            Ok(None) => {
                waraka_plugin::debug!("geoip: no database knows {ip}");
                return Verdict::Cont;
            }
            Err(e) => {
                waraka_plugin::warn!("geoip: looking up {ip} failed: {e:?}");
                return Verdict::Cont;
            }
        };
        for (key, value) in notes_of(&location) {
            waraka_plugin::note_connection(key, &value);
        }
        // The network for karma's history, when the asn plugin did not note it.
        if let (Some(asn), None) = (location.asn, connection_note("asn")) {
            waraka_plugin::note_connection("asn", &asn.to_string());
        }
        let distance = here(&settings)
            .zip(coordinates(&location))
            .map(|(a, b)| distance_km(a, b).round() as u64);
        if let Some(km) = distance {
            waraka_plugin::note_connection("geoip.distance", &km.to_string());
            let too_far = settings.number("too_far", 0u64);
            if too_far > 0 && km > too_far {
                waraka_plugin::note_connection("geoip.too_far", &km.to_string());
            }
        }
        waraka_plugin::info!(
            "geoip: {ip} is in {}",
            summary(&[
                Some(location.country),
                Some(location.region),
                Some(location.city),
                distance.map(|km| format!("{km}km")),
                location.asn.map(|asn| format!("AS{asn}")),
            ])
        );
        Verdict::Cont
    }

    fn mail(_sender: Address) -> Verdict {
        if session::relaying() {
            return Verdict::Cont;
        }
        let Some(country) = connection_note("geoip.country") else {
            return Verdict::Cont;
        };
        let settings = Settings::load(SETTINGS);
        if country_allowed(&settings, &country) {
            return Verdict::Cont;
        }
        waraka_plugin::info!("geoip: refusing mail from a client in {country}");
        Verdict::deny_code(
            550,
            "5.7.1",
            &format!("Mail from clients in {country} is not accepted here"),
        )
    }

    fn data_post() -> Verdict {
        if !Settings::load(SETTINGS).bool("add_header", true) {
            return Verdict::Cont;
        }
        let header = summary(&[
            connection_note("geoip.country"),
            connection_note("geoip.region"),
            connection_note("geoip.city"),
            connection_note("geoip.distance").map(|km| format!("{km}km")),
        ]);
        if !header.is_empty() {
            waraka_plugin::replace_header("X-Waraka-GeoIP", &header);
        }
        Verdict::Cont
    }
}

waraka_plugin::export!(GeoIp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_great_circles() {
        let seattle = (47.6062, -122.3321);
        let amsterdam = (52.3676, 4.9041);
        let km = distance_km(seattle, amsterdam);
        assert!((7800.0..7900.0).contains(&km), "{km}");
        assert_eq!(distance_km(amsterdam, amsterdam), 0.0);
        let antipode = distance_km((0.0, 0.0), (0.0, 180.0));
        assert!((antipode - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    }

    #[test]
    fn countries_are_denied_or_allowed_by_list() {
        let settings = |text: &str| Settings::from_lines(&text.lines().map(str::to_string).collect::<Vec<_>>());
        let open = settings("deny_countries =\nallow_countries =");
        assert!(country_allowed(&open, "CN"));
        let deny = settings("deny_countries = CN, ru");
        assert!(!country_allowed(&deny, "CN") && !country_allowed(&deny, "RU"));
        assert!(country_allowed(&deny, "US"));
        let only = settings("allow_countries = NL, DE");
        assert!(country_allowed(&only, "nl") && !country_allowed(&only, "US"));
        let both = settings("allow_countries = NL\ndeny_countries = NL");
        assert!(!country_allowed(&both, "NL"), "a denial wins");
    }

    #[test]
    fn summaries_leave_out_what_is_unknown() {
        assert_eq!(
            summary(&[Some("US".into()), Some(String::new()), Some("Seattle".into()), None]),
            "US, Seattle"
        );
        assert_eq!(summary(&[None, None]), "");
    }
}

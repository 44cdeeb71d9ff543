//! Where an IP address is, from MaxMind DB files (`[geoip] databases`:
//! GeoLite2/GeoIP2 City, Country or ASN, DB-IP Lite and the like): each
//! database is asked in turn and what they know is merged into one
//! [`Location`].
//!
//! A database is read into memory when the server starts (a file that
//! cannot be read is a start-up error) and read again when its file
//! changes, checked at most once a minute and at each reload, so a
//! `geoipupdate` run needs no restart; a file that turns bad meanwhile
//! leaves the last good copy in use.

use super::CapabilityError;
use maxminddb::Reader;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// How often a database file is looked at for a newer version.
const RECHECK: Duration = Duration::from_secs(60);

/// What the databases know of one address; empty text and `None` for
/// what none of them knows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Location {
    /// The ISO 3166-1 code of the country (`US`).
    pub country: String,
    /// The continent's two-letter code (`NA`).
    pub continent: String,
    /// The ISO code of the largest subdivision (a state: `WA`).
    pub region: String,
    /// The city's English name.
    pub city: String,
    /// Latitude and longitude, in degrees.
    pub coordinates: Option<(f64, f64)>,
    /// The autonomous system that announces the address.
    pub asn: Option<u32>,
    /// Its organisation's name.
    pub as_organization: String,
}

impl Location {
    /// Fills what `self` does not know from `other`.
    fn merge(&mut self, other: Location) {
        let fill = |mine: &mut String, theirs: String| {
            if mine.is_empty() {
                *mine = theirs;
            }
        };
        fill(&mut self.country, other.country);
        fill(&mut self.continent, other.continent);
        fill(&mut self.region, other.region);
        fill(&mut self.city, other.city);
        fill(&mut self.as_organization, other.as_organization);
        self.coordinates = self.coordinates.or(other.coordinates);
        self.asn = self.asn.or(other.asn);
    }
}

/// The fields of a City, Country or ASN record that a [`Location`] takes.
#[derive(Deserialize, Default)]
struct Record {
    #[serde(default)]
    country: Option<Coded>,
    #[serde(default)]
    continent: Option<Coded>,
    #[serde(default)]
    subdivisions: Option<Vec<Coded>>,
    #[serde(default)]
    city: Option<Named>,
    #[serde(default)]
    location: Option<Coordinates>,
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(default)]
    autonomous_system_organization: Option<String>,
}

#[derive(Deserialize, Default)]
struct Coded {
    #[serde(default)]
    iso_code: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

impl Coded {
    fn code(self) -> String {
        self.iso_code.or(self.code).unwrap_or_default()
    }
}

#[derive(Deserialize, Default)]
struct Named {
    #[serde(default)]
    names: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Coordinates {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl From<Record> for Location {
    fn from(record: Record) -> Location {
        Location {
            country: record.country.map(Coded::code).unwrap_or_default(),
            continent: record.continent.map(Coded::code).unwrap_or_default(),
            region: record
                .subdivisions
                .and_then(|list| list.into_iter().next())
                .map(Coded::code)
                .unwrap_or_default(),
            city: record
                .city
                .and_then(|mut city| city.names.remove("en"))
                .unwrap_or_default(),
            coordinates: record.location.and_then(|l| l.latitude.zip(l.longitude)),
            asn: record.autonomous_system_number,
            as_organization: record.autonomous_system_organization.unwrap_or_default(),
        }
    }
}

/// One database file and the copy of it in use.
struct Database {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    reader: Arc<Reader<Vec<u8>>>,
    modified: Option<SystemTime>,
    /// When the file was last looked at; `None`: at the next lookup.
    checked: Option<Instant>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn open(path: &Path) -> Result<Loaded, String> {
    let modified = modified(path);
    let reader = Reader::open_readfile(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Loaded {
        reader: Arc::new(reader),
        modified,
        checked: Some(Instant::now()),
    })
}

impl Database {
    /// The copy to ask: the one in use, or a newer one if the file changed
    /// since it was read (looked at once per [`RECHECK`]).
    async fn reader(self: &Arc<Self>) -> Arc<Reader<Vec<u8>>> {
        let (reader, changed) = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if loaded.checked.is_some_and(|at| at.elapsed() < RECHECK) {
                return loaded.reader.clone();
            }
            loaded.checked = Some(Instant::now());
            let now = modified(&self.path);
            (loaded.reader.clone(), now.is_some() && now != loaded.modified)
        };
        if !changed {
            return reader;
        }
        let this = self.clone();
        let reopened = tokio::task::spawn_blocking(move || open(&this.path))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        match reopened {
            Ok(fresh) => {
                info!(database = %self.path.display(), "GeoIP database changed: read again");
                *loaded = fresh;
            }
            Err(e) => warn!(error = %e, "GeoIP database changed but cannot be read: the last good copy stays in use"),
        }
        loaded.reader.clone()
    }
}

/// The `[geoip]` databases.
pub struct GeoIp {
    databases: Vec<Arc<Database>>,
}

impl GeoIp {
    /// Reads every database; `Err` names one that cannot be read.
    pub fn open(paths: &[PathBuf]) -> Result<GeoIp, String> {
        let databases = paths
            .iter()
            .map(|path| {
                Ok(Arc::new(Database {
                    path: path.clone(),
                    loaded: Mutex::new(open(path)?),
                }))
            })
            .collect::<Result<_, String>>()?;
        Ok(GeoIp { databases })
    }

    /// Makes the next lookup look at the files for newer versions (a reload).
    pub fn recheck(&self) {
        for database in &self.databases {
            database.loaded.lock().unwrap_or_else(|e| e.into_inner()).checked = None;
        }
    }

    /// What the databases know of `ip`; `None` when none has it (private
    /// and unallocated addresses, as a rule).
    pub async fn lookup(&self, ip: IpAddr) -> Result<Option<Location>, CapabilityError> {
        let mut found: Option<Location> = None;
        for database in &self.databases {
            let reader = database.reader().await;
            let record: Option<Record> = reader
                .lookup(ip)
                .and_then(|result| result.decode())
                .map_err(|e| CapabilityError::Backend(format!("{}: {e}", database.path.display())))?;
            if let Some(record) = record {
                found.get_or_insert_with(Location::default).merge(record.into());
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_each_kind_read_as_locations_and_merge() {
        let city = Record {
            country: Some(Coded {
                iso_code: Some("US".into()),
                code: None,
            }),
            continent: Some(Coded {
                iso_code: None,
                code: Some("NA".into()),
            }),
            subdivisions: Some(vec![Coded {
                iso_code: Some("WA".into()),
                code: None,
            }]),
            city: Some(Named {
                names: BTreeMap::from([("en".into(), "Seattle".into()), ("de".into(), "Seattle".into())]),
            }),
            location: Some(Coordinates {
                latitude: Some(47.6),
                longitude: Some(-122.3),
            }),
            ..Record::default()
        };
        let asn = Record {
            autonomous_system_number: Some(64500),
            autonomous_system_organization: Some("Example Net".into()),
            country: Some(Coded {
                iso_code: Some("NL".into()),
                code: None,
            }),
            ..Record::default()
        };
        let mut location = Location::from(city);
        location.merge(asn.into());
        assert_eq!(
            location,
            Location {
                country: "US".into(),
                continent: "NA".into(),
                region: "WA".into(),
                city: "Seattle".into(),
                coordinates: Some((47.6, -122.3)),
                asn: Some(64500),
                as_organization: "Example Net".into(),
            },
            "the first database's country stands"
        );
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.mmdb");
        std::fs::write(&path, b"not a database").unwrap();
        let err = GeoIp::open(std::slice::from_ref(&path)).err().expect("refused");
        assert!(err.contains("bad.mmdb"), "{err}");
        assert!(GeoIp::open(&[dir.path().join("missing.mmdb")]).is_err());
    }
}

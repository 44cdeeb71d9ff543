//! What the p0f daemon (passive OS fingerprinting, version 3) saw of a
//! host's TCP connections, asked over its API socket (`p0f -s PATH`): one
//! 21-byte query, one 232-byte answer, as `p0f-client` and Haraka's `p0f`
//! plugin do.

use super::CapabilityError;
use std::net::IpAddr;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The query's magic number.
const QUERY_MAGIC: u32 = 0x5030_4601;
/// The answer's magic number.
const ANSWER_MAGIC: u32 = 0x5030_4602;
/// The answer's size.
const ANSWER_LEN: usize = 232;
/// The status of an answer with a fingerprint.
const STATUS_OK: u32 = 0x10;
/// The status when p0f has not seen the host.
const STATUS_NO_MATCH: u32 = 0x20;

/// What p0f knows of a host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    /// The operating system (`Linux`, `Windows`); empty when unknown.
    pub os_name: String,
    /// Its version (`2.2.x-3.x`, `7 or 8`); empty when unknown.
    pub os_flavor: String,
    /// Whether the match is fuzzy or generic (`fuzzy`, `generic`, both), or empty.
    pub os_match: String,
    /// Network hops away, from the packets' TTL.
    pub distance: Option<i16>,
    /// The link the host is behind, from the MTU (`Ethernet or modem`, `DSL`…).
    pub link_type: String,
    /// Connections p0f saw from it.
    pub total_connections: u32,
    /// Its uptime in minutes, when its timestamps told.
    pub uptime_minutes: Option<u32>,
    /// When p0f last saw signs of several hosts behind the address (NAT),
    /// in seconds since the epoch.
    pub last_nat: Option<u32>,
}

/// The p0f daemon's API socket.
#[derive(Clone, Debug)]
pub struct P0f {
    socket: PathBuf,
}

impl P0f {
    /// The daemon listening on `socket`.
    pub fn new(socket: PathBuf) -> P0f {
        P0f { socket }
    }

    /// What p0f knows of `ip`; `None` when it has not seen it.
    pub async fn query(&self, ip: IpAddr) -> Result<Option<Fingerprint>, CapabilityError> {
        let failed = |e: std::io::Error| CapabilityError::Backend(format!("p0f ({}): {e}", self.socket.display()));
        let mut stream = UnixStream::connect(&self.socket).await.map_err(failed)?;
        stream.write_all(&query(ip)).await.map_err(failed)?;
        let mut answer = [0u8; ANSWER_LEN];
        stream.read_exact(&mut answer).await.map_err(failed)?;
        read_answer(&answer).map_err(|why| CapabilityError::Backend(format!("p0f ({}): {why}", self.socket.display())))
    }
}

/// The query for `ip`: magic, address type (4 or 6), 16 address bytes.
fn query(ip: IpAddr) -> [u8; 21] {
    let mut out = [0u8; 21];
    out[..4].copy_from_slice(&QUERY_MAGIC.to_le_bytes());
    match ip {
        IpAddr::V4(v4) => {
            out[4] = 4;
            out[5..9].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out[4] = 6;
            out[5..21].copy_from_slice(&v6.octets());
        }
    }
    out
}

/// The fingerprint in an answer, or why the answer is not one.
fn read_answer(answer: &[u8; ANSWER_LEN]) -> Result<Option<Fingerprint>, String> {
    let u32_at = |at: usize| u32::from_le_bytes(answer[at..at + 4].try_into().expect("4 bytes"));
    let text_at = |at: usize| {
        let field = &answer[at..at + 32];
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        String::from_utf8_lossy(&field[..end]).into_owned()
    };
    if u32_at(0) != ANSWER_MAGIC {
        return Err("the answer is not p0f's".into());
    }
    match u32_at(4) {
        STATUS_OK => {}
        STATUS_NO_MATCH => return Ok(None),
        status => return Err(format!("p0f refused the query (status {status:#x})")),
    }
    let distance = i16::from_le_bytes([answer[36], answer[37]]);
    let os_match = match answer[39] {
        0 => "",
        1 => "fuzzy",
        2 => "generic",
        _ => "fuzzy generic",
    };
    Ok(Some(Fingerprint {
        total_connections: u32_at(16),
        uptime_minutes: Some(u32_at(20)).filter(|&minutes| minutes != 0),
        last_nat: Some(u32_at(28)).filter(|&at| at != 0),
        distance: (distance >= 0).then_some(distance),
        os_match: os_match.to_string(),
        os_name: text_at(40),
        os_flavor: text_at(72),
        link_type: text_at(168),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u32) -> [u8; ANSWER_LEN] {
        let mut out = [0u8; ANSWER_LEN];
        out[..4].copy_from_slice(&ANSWER_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&status.to_le_bytes());
        out[16..20].copy_from_slice(&3u32.to_le_bytes());
        out[36..38].copy_from_slice(&(-1i16).to_le_bytes());
        out[39] = 2;
        out[40..45].copy_from_slice(b"Linux");
        out[72..81].copy_from_slice(b"2.2.x-3.x");
        out[168..185].copy_from_slice(b"Ethernet or modem");
        out
    }

    #[test]
    fn queries_and_answers_are_p0f_s_layout() {
        let v4 = query("192.0.2.7".parse().unwrap());
        assert_eq!(&v4[..5], &[0x01, 0x46, 0x30, 0x50, 4]);
        assert_eq!(&v4[5..9], &[192, 0, 2, 7]);
        let v6 = query("2001:db8::1".parse().unwrap());
        assert_eq!((v6[4], v6[5], v6[20]), (6, 0x20, 1));
        let seen = read_answer(&answer(STATUS_OK)).unwrap().unwrap();
        assert_eq!((seen.os_name.as_str(), seen.os_flavor.as_str()), ("Linux", "2.2.x-3.x"));
        assert_eq!(seen.link_type, "Ethernet or modem");
        assert_eq!(
            (seen.distance, seen.total_connections, seen.uptime_minutes),
            (None, 3, None)
        );
        assert_eq!(seen.os_match, "generic");
        assert_eq!(read_answer(&answer(STATUS_NO_MATCH)).unwrap(), None);
        assert!(read_answer(&answer(0)).is_err(), "a bad query");
        assert!(read_answer(&[0u8; ANSWER_LEN]).is_err(), "not p0f");
    }
}

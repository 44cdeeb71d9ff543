//! The shape of the queue, as Postfix's `qshape` draws it: per destination
//! domain, how many entries wait and how old they are — where a backlog
//! builds up and since when (`waraka queue shape`).

use super::Entry;
use std::collections::BTreeMap;

/// The upper ends of the age columns, in minutes (the last column is older).
const BUCKETS: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/// One row: entries in total, held, and by age.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Row {
    total: usize,
    held: usize,
    by_age: [usize; BUCKETS.len() + 1],
}

impl Row {
    fn count(&mut self, entry: &Entry, now_ms: u64) {
        let minutes = now_ms.saturating_sub(entry.arrival_ms) / 60_000;
        let column = BUCKETS.iter().position(|&end| minutes < end).unwrap_or(BUCKETS.len());
        self.total += 1;
        self.held += usize::from(entry.held);
        self.by_age[column] += 1;
    }

    fn line(&self, name: &str) -> String {
        let ages: Vec<String> = self.by_age.iter().map(|n| format!("{n:>6}")).collect();
        format!("{name:<32} {:>6} {:>6} {}", self.total, self.held, ages.join(" "))
    }
}

/// The table of `entries` at `now_ms`: a total line, then the `top` domains
/// with the most entries (ties by name); an age column counts the entries
/// queued at most that many minutes ago and longer than the column before.
pub fn shape(entries: &[Entry], now_ms: u64, top: usize) -> String {
    let mut total = Row::default();
    let mut domains: BTreeMap<&str, Row> = BTreeMap::new();
    for entry in entries {
        total.count(entry, now_ms);
        domains.entry(entry.domain.as_str()).or_default().count(entry, now_ms);
    }
    let mut rows: Vec<(&str, Row)> = domains.into_iter().collect();
    rows.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(b.0)));
    let ages: Vec<String> = BUCKETS
        .iter()
        .map(|end| format!("{end:>6}"))
        .chain(std::iter::once(format!(
            "{:>6}",
            format!("{}+", BUCKETS[BUCKETS.len() - 1])
        )))
        .collect();
    let mut out = format!(
        "{:<32} {:>6} {:>6} {}\n",
        "domain / minutes",
        "T",
        "held",
        ages.join(" ")
    );
    out.push_str(&total.line("TOTAL"));
    out.push('\n');
    for (domain, row) in rows.iter().take(top) {
        out.push_str(&row.line(domain));
        out.push('\n');
    }
    if rows.len() > top {
        out.push_str(&format!("… and {} more domains\n", rows.len() - top));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn entry(domain: &str, minutes_old: u64, held: bool) -> Entry {
        Entry {
            domain: domain.into(),
            arrival_ms: NOW - minutes_old * 60_000,
            held,
            ..Entry::default()
        }
    }

    #[test]
    fn entries_are_counted_by_domain_and_age() {
        let entries = [
            entry("a.test", 0, false),
            entry("a.test", 7, false),
            entry("a.test", 3000, true),
            entry("b.test", 100, false),
            entry("c.test", 1, false),
        ];
        let table = shape(&entries, NOW, 2);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("domain / minutes"), "{table}");
        let numbers =
            |line: &str| -> Vec<usize> { line.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect() };
        assert_eq!(numbers(lines[1]), [5, 1, 2, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
        assert!(lines[2].starts_with("a.test"));
        assert_eq!(numbers(lines[2]), [3, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(lines[3].starts_with("b.test"), "ties after counts, by name: b before c");
        assert_eq!(lines[4], "… and 1 more domains");
    }
}

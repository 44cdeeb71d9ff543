//! Entries the administrator gives up on (`waraka queue bounce`): each
//! recipient fails now, and the sender gets the bounce (RFC 3464) that the
//! end of the retry schedule would have brought — for mail to a domain
//! that will not come back, without days of waiting.

use super::{Outbound, Outcome, all_recipients, delivery_info};
use crate::delivery::Report;
use crate::queue::Selection;
use std::io;
use tracing::info;

impl Outbound {
    /// Fails every recipient of the selected waiting and held entries with
    /// `reason`, through the `bounce` hook and the notices the senders
    /// asked for, as a failed delivery. Entries being delivered are left
    /// to their attempt. Returns how many were returned and how many were
    /// being delivered; an error when an id names no waiting or held entry.
    pub async fn give_up(&self, selection: Selection, reason: &str) -> io::Result<(usize, usize)> {
        let (taken, busy) = {
            let mut state = self.state();
            let mut taken = state.take_waiting(&selection);
            let held: Vec<String> = state
                .held
                .values()
                .filter(|e| selection.matches(e))
                .map(|e| e.id.clone())
                .collect();
            taken.extend(held.iter().filter_map(|id| state.held.remove(id)));
            let busy = state
                .in_progress
                .iter()
                .filter(|(_, entry)| selection.matches(entry))
                .count();
            (taken, busy)
        };
        if let Selection::Id(id) = &selection
            && taken.is_empty()
            && busy == 0
        {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no queued entry {id}")));
        }
        let returned = taken.len();
        let diagnostic = format!("returned to the sender by the administrator: {reason}");
        for entry in taken {
            let info = delivery_info(&entry);
            let failure = Report::local("5.0.0", diagnostic.clone());
            let outcomes = all_recipients(&entry, Outcome::Failed(failure));
            let (kept, notices) = self.settle(entry, &info, outcomes).await;
            self.schedule(kept.into_iter().chain(notices));
        }
        info!(selection = %selection.words(), returned, busy, %reason, "queue entries returned to their senders");
        Ok((returned, busy))
    }
}

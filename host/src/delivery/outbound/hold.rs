//! Holding queued entries (Postfix's hold queue): `waraka queue hold` and
//! `release` through the control socket.

use super::{Outbound, State};
use crate::queue::{Entry, Selection, now_ms};
use std::io;
use tracing::{error, info};

impl Outbound {
    /// Holds the selected entries: they are not attempted, bounced or
    /// expired until released, also across restarts. An entry being
    /// delivered is held after its attempt, if recipients are left. Returns
    /// how many were held now and how many will be after their attempt; an
    /// error when an id names no entry, or a hold could not be saved.
    pub async fn hold(&self, selection: Selection) -> io::Result<(usize, usize)> {
        let (taken, after) = {
            let mut state = self.state();
            let taken = state.take_waiting(&selection);
            let after: Vec<String> = state
                .in_progress
                .iter()
                .filter(|(_, entry)| selection.matches(entry))
                .map(|(id, _)| id.clone())
                .collect();
            let already = state.held.values().any(|e| selection.matches(e));
            if let Selection::Id(id) = &selection
                && taken.is_empty()
                && after.is_empty()
                && !already
            {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("no queued entry {id}")));
            }
            state.hold_after_attempt.extend(after.iter().cloned());
            (taken, after.len())
        };
        let count = self.mark_held(taken, true).await?;
        info!(selection = %selection.words(), held = count, after_attempt = after, "queue entries held");
        Ok((count, after))
    }

    /// Releases the selected held entries: they are due now. Returns how
    /// many; an error when an id names no entry, or a release could not be
    /// saved.
    pub async fn release(&self, selection: Selection) -> io::Result<usize> {
        let taken = {
            let mut state = self.state();
            let State {
                waiting,
                held,
                in_progress,
                hold_after_attempt,
                ..
            } = &mut *state;
            hold_after_attempt.retain(|id| !in_progress.get(id).is_some_and(|entry| selection.matches(entry)));
            let ids: Vec<String> = held
                .values()
                .filter(|e| selection.matches(e))
                .map(|e| e.id.clone())
                .collect();
            if let Selection::Id(id) = &selection
                && ids.is_empty()
                && !in_progress.contains_key(id)
                && !waiting.values().any(|e| e.id == *id)
            {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("no queued entry {id}")));
            }
            ids.iter().filter_map(|id| held.remove(id)).collect::<Vec<Entry>>()
        };
        let count = self.mark_held(taken, false).await?;
        info!(selection = %selection.words(), released = count, "queue entries released");
        Ok(count)
    }

    /// Saves `entries` as held or not (released ones due now), then
    /// schedules them; an entry whose change could not be saved is
    /// scheduled as it was, and one deleted meanwhile (`waraka queue
    /// delete`) is dropped. Returns how many were changed.
    pub(super) async fn mark_held(&self, entries: Vec<Entry>, held: bool) -> io::Result<usize> {
        let (entries, failure) = self
            .blocking(move |o| {
                let mut failure = None;
                let now = now_ms();
                let entries = entries
                    .into_iter()
                    .filter(|entry| {
                        let queued = o.inner.store.contains(&entry.id);
                        if !queued {
                            info!(id = %entry.id, "queue entry deleted while waiting; dropped");
                        }
                        queued
                    })
                    .map(|mut entry| {
                        let before = entry.clone();
                        entry.set_held(held, now);
                        match o.inner.store.update(&entry) {
                            Ok(()) => entry,
                            Err(e) => {
                                error!(id = %entry.id, error = %e, "could not save a hold or release");
                                failure = Some(e);
                                before
                            }
                        }
                    })
                    .collect::<Vec<Entry>>();
                (entries, failure)
            })
            .await;
        let changed = entries.iter().filter(|e| e.held == held).count();
        self.schedule(entries);
        failure.map_or(Ok(changed), Err)
    }
}

//! `queue/s3`: stores each accepted message in a blob store (an S3 bucket,
//! or a local directory), one object per recipient — the tutorial's
//! `aws_s3_queue`, without the message ever passing through the plugin.
//!
//! The host streams the message from its spool into the store
//! (`blobstore::put-message`, gzip-compressed on the way when asked, multipart
//! for large messages); every further recipient gets a server-side copy of
//! that first object instead of a second upload. The plugin answers `ok` only
//! after the store confirmed every object; any failure removes the objects it
//! made and answers `451 4.3.0`, so the client retries and nothing is lost.
//!
//! The keys it wrote are left in the transaction note `queue.s3.keys`, one
//! `address<TAB>key` line per recipient, for a later plugin (`queue/sql`).
//! Settings are in `config/queue/s3.ini`; see `docs/plugins/queue/s3.md`.

use waraka_plugin::{Address, Error, Hook, Plugin, Verdict, blobstore, envelope, host_list, path_segment, session};

const SETTINGS: &str = "queue/s3.ini";

/// The note that lists the stored keys, one `address<TAB>key` line each
/// (read by `queue/sql`).
const KEYS_NOTE: &str = "queue.s3.keys";

struct S3Queue;

/// What `config/queue/s3.ini` says.
struct Settings {
    store: String,
    key: String,
    extension: String,
    gzip: bool,
    copy_all_addresses: bool,
    local_only: bool,
    continue_chain: bool,
}

impl Settings {
    fn load() -> Settings {
        let get = |key: &str, default: &str| waraka_plugin::setting(SETTINGS, key).unwrap_or_else(|| default.into());
        let flag = |key: &str, default: bool| waraka_plugin::setting_bool(SETTINGS, key, default);
        Settings {
            store: get("store", "mail"),
            key: get("key", "{address}/{uuid}{extension}"),
            extension: get("extension", ".eml"),
            gzip: flag("gzip", false),
            copy_all_addresses: flag("copy_all_addresses", true),
            local_only: flag("local_only", true),
            continue_chain: flag("continue", false),
        }
    }
}

/// The object key for `recipient`: the template with `{address}`, `{local}`,
/// `{domain}`, `{uuid}`, `{transaction}` and `{extension}` replaced.
fn object_key(template: &str, recipient: &Address, uuid: &str, transaction: &str, extension: &str) -> String {
    let domain = recipient.domain.to_ascii_lowercase();
    let address = if domain.is_empty() {
        recipient.local_part.clone()
    } else {
        format!("{}@{domain}", recipient.local_part)
    };
    template
        .replace("{address}", &path_segment(&address))
        .replace("{local}", &path_segment(&recipient.local_part))
        .replace("{domain}", &path_segment(&domain))
        .replace("{uuid}", uuid)
        .replace("{transaction}", &path_segment(transaction))
        .replace("{extension}", extension)
}

/// The recipients that get an object, in envelope order.
fn chosen_recipients(settings: &Settings) -> Result<Vec<Address>, Error> {
    let mut chosen = Vec::new();
    for recipient in envelope::recipients() {
        if settings.local_only && !host_list::is_local_recipient(&recipient)? {
            continue;
        }
        chosen.push(recipient);
        if !settings.copy_all_addresses {
            break;
        }
    }
    Ok(chosen)
}

/// Stores the message under every key: one upload, then copies. On failure
/// the objects already made are removed again (best effort).
fn store_all(settings: &Settings, keys: &[String]) -> Result<u64, Error> {
    let Some((first, rest)) = keys.split_first() else {
        return Ok(0);
    };
    let size = blobstore::put_message(&settings.store, first, settings.gzip)?;
    for (done, key) in rest.iter().enumerate() {
        if let Err(e) = blobstore::copy(&settings.store, first, key) {
            for made in keys.iter().take(done + 1) {
                let _ = blobstore::delete(&settings.store, made);
            }
            return Err(e);
        }
    }
    Ok(size)
}

fn temporary_failure(e: &Error) -> Verdict {
    waraka_plugin::error!("storing the message failed: {e:?}");
    Verdict::denysoft_code(451, "4.3.0", "Message store temporarily unavailable, try again later")
}

impl Plugin for S3Queue {
    const NAME: &'static str = "queue/s3";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::Queue];

    fn queue() -> Verdict {
        let settings = Settings::load();
        let recipients = match chosen_recipients(&settings) {
            Ok(recipients) => recipients,
            Err(e) => return temporary_failure(&e),
        };
        if recipients.is_empty() {
            waraka_plugin::info!("no local recipient: nothing stored");
            return Verdict::Cont;
        }
        let transaction = session::transaction_id().unwrap_or_else(session::connection_id);
        let uuid = uuid::Uuid::new_v4().to_string();
        let keys: Vec<String> = recipients
            .iter()
            .map(|r| object_key(&settings.key, r, &uuid, &transaction, &settings.extension))
            .collect();
        let size = match store_all(&settings, &keys) {
            Ok(size) => size,
            Err(e) => return temporary_failure(&e),
        };
        let listing: String = recipients
            .iter()
            .zip(&keys)
            .map(|(r, key)| format!("{}\t{key}\n", r.to_addr_spec()))
            .collect();
        waraka_plugin::note_transaction(KEYS_NOTE, &listing);
        waraka_plugin::info!(
            "stored {size} bytes as {} object(s) in {}: {}",
            keys.len(),
            settings.store,
            keys.join(" ")
        );
        if settings.continue_chain {
            Verdict::Cont
        } else {
            Verdict::ok_with(&format!("Message queued as {transaction}"))
        }
    }
}

waraka_plugin::export!(S3Queue);

#[cfg(test)]
mod tests {
    use super::*;

    fn address(local: &str, domain: &str) -> Address {
        Address {
            local_part: local.into(),
            domain: domain.into(),
            params: Vec::new(),
        }
    }

    #[test]
    fn keys_follow_the_template_and_stay_one_path_per_part() {
        let key = object_key(
            "{address}/{uuid}{extension}",
            &address("Bob", "Example.COM"),
            "u-1",
            "T.1",
            ".eml",
        );
        assert_eq!(key, "Bob@example.com/u-1.eml");
        let key = object_key("{domain}/{local}/{transaction}", &address("a/../b", ""), "u", "T/1", "");
        assert_eq!(key, "_/a_.._b/T_1");
        let key = object_key("{local}/{uuid}", &address("..", "d"), "u", "t", "");
        assert_eq!(key, "_/u");
    }
}

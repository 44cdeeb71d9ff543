//! `attachment`: refuses messages that carry attachments of dangerous kinds,
//! as Haraka's `attachment` plugin: by file extension, by file-name and
//! content-type patterns, and by what zip archives hold (zips inside zips
//! too) — or, with `strip`, takes those attachments out and delivers the
//! rest with a note in their place. The host parses the message (the
//! `mime` import), so the plugin never reads it. Settings: `config/attachment.ini`; patterns:
//! `config/attachment.filename.regex`, `config/attachment.ctype.regex`,
//! `config/attachment.archive.filename.regex`.

use waraka_plugin::mime::{self, Part};
use waraka_plugin::{Hook, Plugin, Regex, Settings, Verdict};

const SETTINGS: &str = "attachment.ini";
/// Haraka's list.
const EXTENSIONS: &str = "ade,adp,bat,chm,cmd,com,cpl,exe,hta,ins,isp,jse,lib,lnk,mde,msc,msp,mst,pif,scr,sct,shb,sys,vb,vbe,vbs,vxd,wsc,wsf,wsh";

struct Attachment;

/// What `config/attachment.*` refuses.
struct Rules {
    extensions: Vec<String>,
    filenames: Vec<Regex>,
    content_types: Vec<Regex>,
    archive_filenames: Vec<Regex>,
    archive_depth: u32,
    encrypted_ok: bool,
    uninspectable_ok: bool,
}

impl Rules {
    fn load(settings: &Settings) -> Rules {
        let extensions = settings
            .get("disallowed_extensions")
            .unwrap_or_else(|| EXTENSIONS.into());
        Rules {
            extensions: waraka_plugin::split_list(&extensions)
                .iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
            filenames: waraka_plugin::patterns("attachment.filename.regex", "{}"),
            content_types: waraka_plugin::patterns("attachment.ctype.regex", "{}"),
            archive_filenames: waraka_plugin::patterns("attachment.archive.filename.regex", "{}"),
            archive_depth: settings.number("archive_max_depth", 5),
            encrypted_ok: settings.get("encrypted_archives").as_deref() == Some("accept"),
            uninspectable_ok: settings.get("uninspectable_archives").as_deref() == Some("accept"),
        }
    }

    /// Why `name` (a file name, or a path inside an archive) is refused.
    fn refuses_name(&self, name: &str, patterns: &[Regex]) -> bool {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        // Windows drops trailing dots and spaces: `evil.exe. ` runs as `evil.exe`.
        let base = base.trim_end_matches(['.', ' ']);
        let extension = base.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        extension.is_some_and(|e| self.extensions.contains(&e)) || patterns.iter().any(|re| re.is_match(name))
    }

    /// The reason to refuse a message with these `parts`, if any.
    fn problem(&self, parts: &[Part]) -> Option<String> {
        parts
            .iter()
            .find_map(|part| self.part_problem(part))
            .map(|what| format!("Message contains {what}"))
    }

    /// Each part to take out of a message with these `parts`: its index
    /// and what is wrong with it.
    fn problems(&self, parts: &[Part]) -> Vec<(u32, String)> {
        (0u32..)
            .zip(parts)
            .filter_map(|(index, part)| Some((index, self.part_problem(part)?)))
            .collect()
    }

    /// What is wrong with `part` (`unacceptable attachment (NAME)`…), if anything.
    fn part_problem(&self, part: &Part) -> Option<String> {
        let shown = part.filename.clone().unwrap_or_else(|| part.content_type.clone());
        if let Some(name) = &part.filename
            && self.refuses_name(name, &self.filenames)
        {
            return Some(format!("unacceptable attachment ({name})"));
        }
        if self.content_types.iter().any(|re| re.is_match(&part.content_type)) {
            return Some(format!("unacceptable content type ({})", part.content_type));
        }
        let archive = part.archive.as_ref()?;
        if let Some(inner) = archive
            .names
            .iter()
            .find(|n| !n.ends_with('/') && self.refuses_name(n, &self.archive_filenames))
        {
            return Some(format!("unacceptable attachment ({shown}: {inner})"));
        }
        if archive.encrypted && !self.encrypted_ok {
            return Some(format!("an encrypted archive ({shown})"));
        }
        if archive.incomplete && !self.uninspectable_ok {
            return Some(format!("an archive that cannot be inspected ({shown})"));
        }
        None
    }
}

/// The note in place of a removed part: `strip_note` with `{what}` filled in.
fn strip_note(template: &str, what: &str) -> String {
    template.replace("{what}", what)
}

/// Takes the parts `problems` names out of the message, each replaced by
/// its note, and lets the message through (`451` when the host cannot).
fn strip(settings: &Settings, problems: Vec<(u32, String)>) -> Verdict {
    let template = settings
        .get("strip_note")
        .unwrap_or_else(|| "The mail server removed {what} from this message.".into());
    let what: Vec<&str> = problems.iter().map(|(_, what)| what.as_str()).collect();
    let summary = what.join("; ");
    let removals: Vec<(u32, String)> = problems
        .iter()
        .map(|(index, what)| (*index, strip_note(&template, what)))
        .collect();
    match mime::remove_parts(&removals) {
        Ok(removed) => {
            waraka_plugin::info!("removed {removed} part(s): {summary}");
            waraka_plugin::note_transaction("attachment.removed", &summary);
            Verdict::Cont
        }
        Err(e) => {
            waraka_plugin::error!("the attachments could not be removed: {e:?}");
            Verdict::denysoft_code(451, "4.3.0", "Unable to remove the attachments now, try later")
        }
    }
}

impl Plugin for Attachment {
    const NAME: &'static str = "attachment";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HOOKS: &'static [Hook] = &[Hook::DataPost];

    fn data_post() -> Verdict {
        let settings = Settings::load(SETTINGS);
        if settings.skips_relaying(false) {
            return Verdict::Cont;
        }
        let rules = Rules::load(&settings);
        let parts = match mime::parts(rules.archive_depth) {
            Ok(parts) => parts,
            Err(e) => {
                waraka_plugin::error!("the message's parts could not be read: {e:?}");
                return Verdict::denysoft_code(451, "4.3.0", "Unable to inspect the attachments now, try later");
            }
        };
        if settings.bool("strip", false) {
            let problems = rules.problems(&parts);
            if problems.is_empty() {
                return Verdict::Cont;
            }
            return strip(&settings, problems);
        }
        let Some(problem) = rules.problem(&parts) else {
            return Verdict::Cont;
        };
        waraka_plugin::info!("{problem}");
        if settings.bool("reject", true) {
            Verdict::deny_code(550, "5.7.1", &problem)
        } else {
            waraka_plugin::note_transaction("attachment.fail", &problem);
            Verdict::Cont
        }
    }
}

waraka_plugin::export!(Attachment);

#[cfg(test)]
mod tests {
    use super::*;
    use waraka_plugin::mime::Archive;

    fn rules() -> Rules {
        Rules {
            extensions: waraka_plugin::split_list(EXTENSIONS),
            filenames: vec![Regex::new("(?i)^invoice.*\\.html?$").unwrap()],
            content_types: vec![Regex::new("^application/x-msdownload$").unwrap()],
            archive_filenames: vec![],
            archive_depth: 5,
            encrypted_ok: false,
            uninspectable_ok: false,
        }
    }

    fn part(content_type: &str, filename: Option<&str>, archive: Option<Archive>) -> Part {
        Part {
            content_type: content_type.into(),
            filename: filename.map(str::to_string),
            attachment: true,
            size: 10,
            archive,
        }
    }

    fn zip(names: &[&str], encrypted: bool, incomplete: bool) -> Option<Archive> {
        Some(Archive {
            names: names.iter().map(|n| n.to_string()).collect(),
            encrypted,
            incomplete,
        })
    }

    #[test]
    fn names_types_and_archive_contents_are_judged() {
        let r = rules();
        let judge = |parts: &[Part]| r.problem(parts);
        assert_eq!(
            judge(&[
                part("text/plain", None, None),
                part("application/pdf", Some("a.pdf"), None)
            ]),
            None
        );
        assert_eq!(
            judge(&[part("application/octet-stream", Some("Setup.EXE"), None)]),
            Some("Message contains unacceptable attachment (Setup.EXE)".into())
        );
        assert!(judge(&[part("application/octet-stream", Some("scan.pdf.scr. "), None)]).is_some());
        assert!(judge(&[part("text/html", Some("Invoice-42.htm"), None)]).is_some());
        assert_eq!(
            judge(&[part("application/x-msdownload", Some("x.bin"), None)]),
            Some("Message contains unacceptable content type (application/x-msdownload)".into())
        );
        assert_eq!(
            judge(&[part(
                "application/zip",
                Some("docs.zip"),
                zip(&["a.txt", "in.zip/run.vbs"], false, false)
            )]),
            Some("Message contains unacceptable attachment (docs.zip: in.zip/run.vbs)".into())
        );
        assert_eq!(
            judge(&[part(
                "application/zip",
                Some("docs.zip"),
                zip(&["exe/", "a.txt"], false, false)
            )]),
            None,
            "a folder named like an extension is no file"
        );
        assert_eq!(
            judge(&[part("application/zip", None, zip(&["a.txt"], true, false))]),
            Some("Message contains an encrypted archive (application/zip)".into())
        );
        assert_eq!(
            judge(&[part("application/zip", Some("z.zip"), zip(&[], false, true))]),
            Some("Message contains an archive that cannot be inspected (z.zip)".into())
        );
        let lenient = Rules {
            encrypted_ok: true,
            uninspectable_ok: true,
            ..rules()
        };
        assert_eq!(
            lenient.problem(&[part("application/zip", None, zip(&["a.txt"], true, true))]),
            None
        );
    }

    #[test]
    fn every_bad_part_is_listed_for_removal_with_what_is_wrong() {
        let parts = [
            part("text/plain", None, None),
            part("application/octet-stream", Some("a.exe"), None),
            part("application/pdf", Some("ok.pdf"), None),
            part("application/zip", Some("z.zip"), zip(&["run.vbs"], false, false)),
        ];
        assert_eq!(
            rules().problems(&parts),
            [
                (1, "unacceptable attachment (a.exe)".to_string()),
                (3, "unacceptable attachment (z.zip: run.vbs)".to_string())
            ]
        );
        assert_eq!(
            strip_note("Removed: {what}.", "unacceptable attachment (a.exe)"),
            "Removed: unacceptable attachment (a.exe)."
        );
    }
}

//! WASI's `descriptor.sync` and `sync-data`, served through the server's
//! [`GroupSync`](crate::capabilities::GroupSync): a plugin's fsync of a file
//! or directory shares one system call with the concurrent fsyncs of the
//! same inode by other connections (group commit). The fsync runs on the
//! calling thread when the store's file calls block it (guest calls off the
//! runtime's workers), else on the blocking pool, as wasmtime-wasi's own.
//!
//! Both are a full `fsync` (the stronger of the two), so that `sync-data`
//! requests can share rounds with `sync` ones.

use super::runtime::Services;
use super::store::StoreState;
use anyhow::Result;
use rustix::fs::{Mode, OFlags, openat};
use std::fs::File;
use std::sync::Arc;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;

/// The WASI interface whose two methods are replaced, at the version
/// wasmtime-wasi links (guests importing an older 0.2 release get it too).
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces `wasmtime_wasi`'s sync methods, already in `linker`, with the
/// shared ones.
pub(super) fn add_to_linker(linker: &mut Linker<StoreState>) -> Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    for method in ["[method]descriptor.sync", "[method]descriptor.sync-data"] {
        types.func_wrap_async(
            method,
            |store: StoreContextMut<'_, StoreState>, (descriptor,): (Resource<Descriptor>,)| {
                Box::new(async move {
                    let (file, blocking, services) = {
                        let state = store.data();
                        let file = match state.table.get(&descriptor)? {
                            Descriptor::File(file) => Ok(file.file.clone()),
                            Descriptor::Dir(dir) => reopen(&dir.dir).map(Arc::new),
                        };
                        (file, state.blocking_files, state.host.services.clone())
                    };
                    let result = match file {
                        Ok(file) => shared_sync(&services, file, blocking).await,
                        Err(e) => Err(e),
                    };
                    Ok((result.map_err(ErrorCode::from),))
                })
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// `fsync(file)` through the server's group commit: on this thread when
/// the store's file calls block it (`blocking`), else on the blocking pool.
pub(super) async fn shared_sync(services: &Services, file: Arc<File>, blocking: bool) -> std::io::Result<()> {
    let fsync = || {
        let file = file.clone();
        async move { file_work(blocking, move || file.sync_all()).await? }
    };
    services.group_sync.sync(&file, fsync).await
}

/// Runs blocking file work `f`: on this thread when the store's file calls
/// may block it (`blocking`: guest calls already run off the runtime's
/// workers), else on the blocking pool.
pub(super) async fn file_work<T: Send + 'static>(
    blocking: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if blocking {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f).await
    }
}

/// The directory `dir` opened for reading: a directory descriptor may be
/// an `O_PATH` one, which cannot be fsynced.
fn reopen(dir: &File) -> std::io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(File::from(openat(dir, ".", flags, Mode::empty())?))
}

//! Blob stores: objects under string keys, in a local directory or in an S3
//! bucket. A put reads from any `Read` (bytes from a plugin, or the queued
//! message straight from the spool, gzipped on the way when asked), in
//! chunks on the blocking pool, so a large message is never held whole.

use super::CapabilityError;
use super::files::check_relative;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Longest key accepted.
pub const MAX_KEY: usize = 1024;
/// S3 part size: objects up to this size are one PUT, larger ones a multipart upload.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Characters escaped in an S3 `CopySource` key: all but unreserved ones and `/`.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// What a put reads from.
pub type BlobSource = Box<dyn Read + Send>;

fn check_key(key: &str) -> Result<(), CapabilityError> {
    if key.is_empty() || key.len() > MAX_KEY || key.chars().any(char::is_control) {
        return Err(CapabilityError::Invalid(format!(
            "keys are 1 to {MAX_KEY} bytes without control characters"
        )));
    }
    Ok(())
}

fn io_error(e: io::Error) -> CapabilityError {
    CapabilityError::Backend(e.to_string())
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> Result<T, CapabilityError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CapabilityError::Backend(format!("blocking task: {e}")))?
        .map_err(io_error)
}

/// One named store.
pub enum BlobStore {
    /// Files under a directory.
    Dir(DirStore),
    /// An S3 bucket.
    S3(S3Store),
}

impl BlobStore {
    /// Stores everything `source` yields under `key`; returns the number of bytes stored.
    pub async fn put(&self, key: &str, source: BlobSource) -> Result<u64, CapabilityError> {
        check_key(key)?;
        match self {
            BlobStore::Dir(d) => d.put(key, source).await,
            BlobStore::S3(s) => s.put(key, source).await,
        }
    }

    /// The object under `key`, if it exists; larger than `max` bytes is a `Limit` error.
    pub async fn get(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>, CapabilityError> {
        check_key(key)?;
        match self {
            BlobStore::Dir(d) => d.get(key, max).await,
            BlobStore::S3(s) => s.get(key, max).await,
        }
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, CapabilityError> {
        check_key(key)?;
        match self {
            BlobStore::Dir(d) => d.exists(key).await,
            BlobStore::S3(s) => s.exists(key).await,
        }
    }

    /// Removes `key` (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), CapabilityError> {
        check_key(key)?;
        match self {
            BlobStore::Dir(d) => d.delete(key).await,
            BlobStore::S3(s) => s.delete(key).await,
        }
    }

    /// Copies `from` to `to` inside the store (server-side for S3).
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), CapabilityError> {
        check_key(from)?;
        check_key(to)?;
        match self {
            BlobStore::Dir(d) => d.copy(from, to).await,
            BlobStore::S3(s) => s.copy(from, to).await,
        }
    }
}

/// Objects as files under a directory; keys are relative paths (`a/b.eml`).
/// Every put is written to a temporary file, fsynced and renamed, and the
/// directory is fsynced: a stored object is complete and durable.
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store rooted at `root` (created on first put).
    pub fn new(root: PathBuf) -> DirStore {
        DirStore { root }
    }

    fn path(&self, key: &str) -> Result<PathBuf, CapabilityError> {
        check_relative(key)?;
        if key.split('/').any(|part| part.starts_with(".tmp-")) {
            return Err(CapabilityError::Invalid(format!(
                "{key:?}: directory store keys have no part starting with '.tmp-'"
            )));
        }
        Ok(self.root.join(key))
    }

    /// Writes `source` to `path` durably: temporary file, fsync, rename, fsync of the directory.
    fn write_durably(path: &Path, source: &mut dyn Read) -> io::Result<u64> {
        let dir = path.parent().expect("keys have a parent");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            let n = io::copy(source, &mut file)?;
            file.flush()?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(n)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    async fn put(&self, key: &str, mut source: BlobSource) -> Result<u64, CapabilityError> {
        let path = self.path(key)?;
        blocking(move || Self::write_durably(&path, &mut source)).await
    }

    async fn get(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>, CapabilityError> {
        let path = self.path(key)?;
        let found = blocking(move || match std::fs::File::open(&path) {
            Ok(file) => {
                let mut data = Vec::new();
                file.take(max as u64 + 1).read_to_end(&mut data)?;
                Ok(Some(data))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
        match found {
            Some(data) if data.len() > max => Err(CapabilityError::Limit(format!("the object is over {max} bytes"))),
            other => Ok(other),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, CapabilityError> {
        let path = self.path(key)?;
        blocking(move || Ok(path.is_file())).await
    }

    async fn delete(&self, key: &str) -> Result<(), CapabilityError> {
        let path = self.path(key)?;
        blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), CapabilityError> {
        let (from, to) = (self.path(from)?, self.path(to)?);
        blocking(move || {
            let mut source = std::fs::File::open(&from)?;
            Self::write_durably(&to, &mut source).map(drop)
        })
        .await
    }
}

pub use waraka_config::S3Settings;

/// Objects in an S3 bucket through `aws-sdk-s3`; the client is made on first use.
pub struct S3Store {
    settings: S3Settings,
    client: OnceCell<aws_sdk_s3::Client>,
}

fn s3_error<E: std::error::Error>(what: &str, e: E) -> CapabilityError {
    CapabilityError::Backend(format!("s3 {what}: {}", DisplayErrorContext(e)))
}

/// Reads up to `size` bytes of `source` on the blocking pool, handing `source` back.
async fn read_chunk(mut source: BlobSource, size: usize) -> Result<(BlobSource, Vec<u8>), CapabilityError> {
    blocking(move || {
        let mut chunk = Vec::with_capacity(size.min(1 << 20));
        (&mut source).take(size as u64).read_to_end(&mut chunk)?;
        Ok((source, chunk))
    })
    .await
}

impl S3Store {
    /// A store with these settings.
    pub fn new(settings: S3Settings) -> S3Store {
        S3Store {
            settings,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &aws_sdk_s3::Client {
        self.client
            .get_or_init(|| async {
                let s = &self.settings;
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https();
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
                if let Some(region) = &s.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                if let (Some(id), Some(secret)) = (&s.access_key_id, &s.secret_access_key) {
                    let credentials = aws_sdk_s3::config::Credentials::new(id, secret, None, None, "waraka.toml");
                    loader = loader.credentials_provider(credentials);
                }
                let shared = loader.load().await;
                let timeouts = aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .build();
                let mut config = aws_sdk_s3::config::Builder::from(&shared)
                    .force_path_style(s.path_style)
                    .timeout_config(timeouts);
                if let Some(endpoint) = &s.endpoint {
                    config = config.endpoint_url(endpoint);
                }
                aws_sdk_s3::Client::from_conf(config.build())
            })
            .await
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.settings.prefix)
    }

    async fn put(&self, key: &str, source: BlobSource) -> Result<u64, CapabilityError> {
        let client = self.client().await;
        let (bucket, key) = (&self.settings.bucket, self.key(key));
        let (source, first) = read_chunk(source, PART_SIZE).await?;
        if first.len() < PART_SIZE {
            let size = first.len() as u64;
            client
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(ByteStream::from(first))
                .send()
                .await
                .map_err(|e| s3_error("put", e))?;
            return Ok(size);
        }
        let upload = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| s3_error("create multipart upload", e))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| CapabilityError::Backend("s3: no upload id".into()))?
            .to_string();
        let result = self.upload_parts(client, &key, &upload_id, source, first).await;
        if result.is_err() {
            let _ = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts(
        &self,
        client: &aws_sdk_s3::Client,
        key: &str,
        upload_id: &str,
        mut source: BlobSource,
        first: Vec<u8>,
    ) -> Result<u64, CapabilityError> {
        let bucket = &self.settings.bucket;
        let mut parts = Vec::new();
        let mut chunk = first;
        let mut total = 0u64;
        while !chunk.is_empty() {
            let number = parts.len() as i32 + 1;
            total += chunk.len() as u64;
            let part = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| s3_error("upload part", e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
            (source, chunk) = read_chunk(source, PART_SIZE).await?;
        }
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| s3_error("complete multipart upload", e))?;
        Ok(total)
    }

    async fn get(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>, CapabilityError> {
        let client = self.client().await;
        let output = match client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(s3_error("get", e)),
        };
        if output.content_length().is_some_and(|n| n as u64 > max as u64) {
            return Err(CapabilityError::Limit(format!("the object is over {max} bytes")));
        }
        let data = output.body.collect().await.map_err(|e| s3_error("get body", e))?;
        Ok(Some(data.to_vec()))
    }

    async fn exists(&self, key: &str) -> Result<bool, CapabilityError> {
        let client = self.client().await;
        match client
            .head_object()
            .bucket(&self.settings.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(false),
            Err(e) => Err(s3_error("head", e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), CapabilityError> {
        let client = self.client().await;
        client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(self.key(key))
            .send()
            .await
            .map_err(|e| s3_error("delete", e))?;
        Ok(())
    }

    async fn copy(&self, from: &str, to: &str) -> Result<(), CapabilityError> {
        let client = self.client().await;
        let bucket = &self.settings.bucket;
        // CopySource is "bucket/key" with the key URL-encoded.
        let key = percent_encoding::utf8_percent_encode(&self.key(from), COPY_SOURCE).to_string();
        let source = format!("{bucket}/{key}");
        client
            .copy_object()
            .bucket(bucket)
            .key(self.key(to))
            .copy_source(source)
            .send()
            .await
            .map_err(|e| s3_error("copy", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dir_store_round_trip_and_refuses_escaping_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::Dir(DirStore::new(dir.path().join("blobs")));
        let n = store.put("a/b.eml", Box::new(io::Cursor::new(b"hello".to_vec()))).await;
        assert_eq!(n, Ok(5));
        assert_eq!(store.get("a/b.eml", 100).await, Ok(Some(b"hello".to_vec())));
        assert!(matches!(store.get("a/b.eml", 3).await, Err(CapabilityError::Limit(_))));
        store.copy("a/b.eml", "c.eml").await.unwrap();
        assert_eq!(store.exists("c.eml").await, Ok(true));
        store.delete("c.eml").await.unwrap();
        store.delete("c.eml").await.unwrap();
        assert_eq!(store.exists("c.eml").await, Ok(false));
        assert_eq!(store.get("missing", 10).await, Ok(None));
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "", "a/", "x\ny"] {
            assert!(
                matches!(store.exists(bad).await, Err(CapabilityError::Invalid(_))),
                "{bad:?}"
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("blobs/a")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left");
    }
}

//! S3 adapter for the images bucket.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use std::time::Duration;

use crate::core::{BlobStore, ObjectInfo, ObjectSummary, Probe};
use crate::error::{Error, Result};

/// The images bucket.
#[derive(Debug, Clone)]
pub struct S3Blobs {
    client: Client,
    /// For presigned PUTs: no checksum is computed into the URL (the SDK's default would sign
    /// a checksum of an empty body, and every real upload would then fail).
    presign_put_client: Client,
    bucket: String,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::unavailable("s3", e)
}

impl S3Blobs {
    /// Wraps a client for `bucket`.
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        let presign_put_client = Client::from_conf(
            client
                .config()
                .to_builder()
                .request_checksum_calculation(
                    aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                )
                .build(),
        );
        Self {
            client,
            presign_put_client,
            bucket: bucket.into(),
        }
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| unavailable(e.into_service_error()))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                let e = e.into_service_error();
                if e.is_no_such_key() {
                    Error::NotFound(format!("s3://{}/{key}", self.bucket))
                } else {
                    unavailable(e)
                }
            })?;
        let data = out.body.collect().await.map_err(unavailable)?;
        Ok(data.into_bytes())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectInfo {
                size: out.content_length.unwrap_or(0).max(0) as u64,
                content_type: out.content_type,
                metadata: out
                    .metadata
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect(),
                etag: out.e_tag.map(|t| t.trim_matches('"').to_owned()),
            })),
            Err(e) => {
                let e = e.into_service_error();
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(unavailable(e))
                }
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| unavailable(e.into_service_error()))?;
        Ok(())
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectSummary>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        while out.len() < limit {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .max_keys((limit - out.len()).min(1000) as i32)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| unavailable(e.into_service_error()))?;
            for o in page.contents.unwrap_or_default() {
                let Some(key) = o.key else { continue };
                out.push(ObjectSummary {
                    key,
                    size: o.size.unwrap_or(0).max(0) as u64,
                    last_modified: o.last_modified.map(|t| t.secs()).unwrap_or(0),
                });
            }
            match page.next_continuation_token {
                Some(t) if page.is_truncated == Some(true) => token = Some(t),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String> {
        let config = PresigningConfig::expires_in(expires_in).map_err(unavailable)?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(unavailable)?;
        Ok(req.uri().to_string())
    }

    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        expires_in: Duration,
    ) -> Result<String> {
        let config = PresigningConfig::expires_in(expires_in).map_err(unavailable)?;
        let req = self
            .presign_put_client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(content_length as i64)
            .presigned(config)
            .await
            .map_err(unavailable)?;
        Ok(req.uri().to_string())
    }
}

#[async_trait]
impl Probe for S3Blobs {
    fn name(&self) -> &'static str {
        "bucket"
    }

    async fn ping(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| unavailable(e.into_service_error()))?;
        Ok(())
    }
}

//! An S3 prefix, listed (backfills and replays without SQS).

use std::collections::HashSet;

use super::{Delivery, Object};

pub struct S3Source {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    done: HashSet<(String, String)>,
}

/// ETags come quoted from S3; the ledger keeps them bare.
pub fn bare_etag(e: &str) -> String {
    e.trim_matches('"').to_owned()
}

impl S3Source {
    pub fn new(client: aws_sdk_s3::Client, bucket: String, prefix: String) -> Self {
        Self {
            client,
            bucket,
            prefix,
            done: HashSet::new(),
        }
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    pub async fn poll(&mut self) -> anyhow::Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                anyhow::anyhow!(
                    "listing s3://{}/{}: {}",
                    self.bucket,
                    self.prefix,
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            })?;
            for o in page.contents() {
                let (Some(key), Some(etag)) = (o.key(), o.e_tag()) else {
                    continue;
                };
                if key.ends_with('/') {
                    continue;
                }
                let etag = bare_etag(etag);
                if self.done.contains(&(key.to_owned(), etag.clone())) {
                    continue;
                }
                out.push(Delivery {
                    objects: vec![Object {
                        source: format!("s3://{}", self.bucket),
                        key: key.to_owned(),
                        etag: Some(etag),
                    }],
                    receipt: None,
                });
            }
        }
        Ok(out)
    }

    pub fn done(&mut self, d: &Delivery) {
        for o in &d.objects {
            if let Some(e) = &o.etag {
                self.done.insert((o.key.clone(), e.clone()));
            }
        }
    }
}

/// Downloads an object; its ETag from the response is what the ledger keeps.
pub async fn fetch(client: &aws_sdk_s3::Client, obj: &Object) -> anyhow::Result<(Vec<u8>, String)> {
    let bucket = obj
        .source
        .strip_prefix("s3://")
        .ok_or_else(|| anyhow::anyhow!("not an S3 object: {}", obj.source))?;
    let out = client
        .get_object()
        .bucket(bucket)
        .key(&obj.key)
        .send()
        .await
        .map_err(|e| {
            if let Some(why) = permanent(&e) {
                return anyhow::Error::new(super::Unfetchable {
                    from: obj.source.clone(),
                    key: obj.key.clone(),
                    why,
                });
            }
            anyhow::anyhow!(
                "getting s3://{bucket}/{}: {}",
                obj.key,
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    let etag = out
        .e_tag()
        .map(bare_etag)
        .or_else(|| obj.etag.clone())
        .unwrap_or_default();
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading s3://{bucket}/{}: {e}", obj.key))?
        .into_bytes()
        .to_vec();
    Ok((bytes, etag))
}

/// The GetObject errors no retry cures, by S3's error code. Others (throttling,
/// 5xx, expired credentials, the network) are retried.
fn permanent<R>(
    e: &aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError, R>,
) -> Option<super::Permanent> {
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    let se = e.as_service_error()?;
    if se.is_no_such_key() {
        return Some(super::Permanent::NotFound);
    }
    match se.code() {
        Some("AccessDenied") => Some(super::Permanent::AccessDenied),
        Some("NoSuchBucket") => Some(super::Permanent::NoSuchBucket),
        _ => None,
    }
}

//! A private moto server per test: Firehose, S3 and SQS on a free loopback port.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::{ChildProcess, ProcessSpec};

/// Region every client and child process uses against moto.
pub const REGION: &str = "us-east-1";
/// moto accepts any credentials; these are the ones the docs use.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";
/// Account moto runs as (its default), for ARNs.
pub const ACCOUNT_ID: &str = "123456789012";

/// Where moto_server is: `$EARSHOT_MOTO_SERVER`, else
/// `$EARSHOT_TOOLS_DIR/moto/bin/moto_server`, else `<repo>/.tools/moto/bin/moto_server`.
pub fn moto_server_path() -> PathBuf {
    if let Some(p) = std::env::var_os("EARSHOT_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let tools = std::env::var_os("EARSHOT_TOOLS_DIR")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools"));
    tools.join("moto/bin/moto_server")
}

/// The repository root (this crate lives in `<root>/tests/testkit`).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or(here)
}

/// Environment that points an AWS SDK in a child process at `endpoint`
/// (moto, or a proxy in front of it) with dummy credentials.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        // Never wait on an instance metadata service that is not there.
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn credentials() -> aws_sdk_s3::config::Credentials {
    aws_sdk_s3::config::Credentials::new(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        None,
        None,
        "earshot-testkit",
    )
}

/// An S3 client for `endpoint` (path-style addressing: moto serves one host).
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A Firehose client for `endpoint`.
pub fn firehose_client(endpoint: &str) -> aws_sdk_firehose::Client {
    let conf = aws_sdk_firehose::Config::builder()
        .behavior_version(aws_sdk_firehose::config::BehaviorVersion::latest())
        .region(aws_sdk_firehose::config::Region::new(REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_firehose::Client::from_conf(conf)
}

/// An SQS client for `endpoint`.
pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// A moto server of its own, killed on drop.
pub struct Moto {
    process: ChildProcess,
    endpoint: String,
}

impl Moto {
    /// Starts moto on a free 127.0.0.1 port (it binds port 0 and prints the
    /// real one) and waits until `GET /moto-api/` answers.
    pub async fn start() -> anyhow::Result<Self> {
        let path = moto_server_path();
        if !path.exists() {
            bail!(
                "moto_server not found at {}: run scripts/test or scripts/dev once (they install it), \
                 or set EARSHOT_MOTO_SERVER to its path",
                path.display()
            );
        }
        let spec = ProcessSpec::new(&path)
            .args(["-H", "127.0.0.1", "-p", "0"])
            // moto is Python: it needs PATH/HOME-ish basics from the parent.
            .inherit_env(true);
        let process = ChildProcess::spawn(&spec)?;
        let port: u16 = process
            .wait_for_stderr(|l| {
                let rest = l.split("Running on http://127.0.0.1:").nth(1)?;
                rest.trim()
                    .trim_end_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .ok()
            })
            .await
            .context("waiting for moto to listen")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build()?;
        let mut moto = Self { process, endpoint };
        loop {
            let ok = http
                .get(format!("{}/moto-api/", moto.endpoint))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(moto);
            }
            if let Some(status) = moto.process.try_wait()? {
                bail!(
                    "moto exited ({status}) before answering\n{}",
                    moto.process.output_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Environment pointing a child's AWS SDK at this moto.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        aws_env(&self.endpoint)
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        s3_client(&self.endpoint)
    }

    pub fn firehose(&self) -> aws_sdk_firehose::Client {
        firehose_client(&self.endpoint)
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        sqs_client(&self.endpoint)
    }

    /// moto's own log, for failure messages.
    pub fn output_text(&self) -> String {
        self.process.output_text()
    }

    /// Forgets every resource (`POST /moto-api/reset`).
    pub async fn reset(&self) -> anyhow::Result<()> {
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .post(format!("{}/moto-api/reset", self.endpoint))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("moto reset answered {}", r.status());
        }
        Ok(())
    }

    /// Creates `bucket` and a Direct PUT delivery stream `stream` writing to
    /// it under `prefix` (ExtendedS3, GZIP configured — moto does not gzip,
    /// and writes one object per PutRecord(Batch) call at once).
    pub async fn create_firehose_to_s3(
        &self,
        stream: &str,
        bucket: &str,
        prefix: &str,
    ) -> anyhow::Result<()> {
        use aws_sdk_firehose::types::{
            BufferingHints, CompressionFormat, DeliveryStreamType, EncryptionConfiguration,
            ExtendedS3DestinationConfiguration, NoEncryptionConfig,
        };
        self.s3()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .with_context(|| format!("creating bucket {bucket}"))?;
        // moto's DescribeDeliveryStream echoes only what was sent, and the SDK
        // requires CompressionFormat and EncryptionConfiguration there.
        let dest = ExtendedS3DestinationConfiguration::builder()
            .role_arn(format!("arn:aws:iam::{ACCOUNT_ID}:role/earshot-firehose"))
            .bucket_arn(format!("arn:aws:s3:::{bucket}"))
            .prefix(prefix)
            .error_output_prefix("errors/")
            .buffering_hints(
                BufferingHints::builder()
                    .size_in_mbs(64)
                    .interval_in_seconds(60)
                    .build(),
            )
            .compression_format(CompressionFormat::Gzip)
            .encryption_configuration(
                EncryptionConfiguration::builder()
                    .no_encryption_config(NoEncryptionConfig::NoEncryption)
                    .build(),
            )
            .build()
            .context("building the S3 destination")?;
        let firehose = self.firehose();
        firehose
            .create_delivery_stream()
            .delivery_stream_name(stream)
            .delivery_stream_type(DeliveryStreamType::DirectPut)
            .extended_s3_destination_configuration(dest)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(aws_sdk_firehose::error::DisplayErrorContext(e).to_string())
            })
            .with_context(|| format!("creating delivery stream {stream}"))?;
        // Proves the stream is readable by the real SDK, not just created.
        let d = firehose
            .describe_delivery_stream()
            .delivery_stream_name(stream)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(aws_sdk_firehose::error::DisplayErrorContext(e).to_string())
            })
            .with_context(|| format!("describing delivery stream {stream}"))?;
        let status = d
            .delivery_stream_description()
            .map(|d| d.delivery_stream_status().as_str().to_owned());
        if status.as_deref() != Some("ACTIVE") {
            bail!("delivery stream {stream} is {status:?}, not ACTIVE");
        }
        Ok(())
    }

    /// Every object under `prefix` in `bucket`, sorted by key, gunzipped
    /// when it starts with the gzip magic bytes (moto never gzips; real
    /// Firehose does when configured).
    pub async fn read_all_objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        read_all_objects(&self.s3(), bucket, prefix).await
    }
}

/// [`Moto::read_all_objects`] with any S3 client.
pub async fn read_all_objects(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))
            .with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => break,
        }
    }
    keys.sort();
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let obj = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))
            .with_context(|| format!("getting s3://{bucket}/{key}"))?;
        let bytes = obj.body.collect().await?.into_bytes().to_vec();
        out.push((key, gunzip_if_gzipped(bytes)?));
    }
    Ok(out)
}

/// Gunzips `bytes` when they start with the gzip magic (1f 8b), else
/// returns them as they are. Multi-member gzip (concatenated files) is read whole.
pub fn gunzip_if_gzipped(bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .context("gunzipping an object")?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

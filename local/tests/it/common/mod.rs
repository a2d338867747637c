//! Shared set-up of the integration tests: one emulator per test (killed when dropped), fresh
//! resources, and helpers to serve the real handlers on 127.0.0.1.
#![allow(dead_code)]

pub mod fal;
pub mod queue;
pub mod stability;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use imagejobs_local::emulator::{self, Emulator};
use imagejobs_local::provision::{Provisioned, ResourceNames, provision};
use imagejobs_local::runner::{Stack, StackConfig};
use shared::adapters::Aws;
use shared::config::Settings;

/// An emulator with provisioned resources and the settings that point at them.
pub struct TestEnv {
    pub emulator: Emulator,
    pub sdk: aws_config::SdkConfig,
    pub provisioned: Provisioned,
    /// The stack's settings; tests point `settings.providers` at contract servers.
    pub settings: Settings,
    /// The resource names' suffix (`imagejobs-local --resource-suffix`, for worker processes).
    pub suffix: String,
}

impl TestEnv {
    pub async fn new() -> Self {
        shared::telemetry::init();
        let emulator = Emulator::start().expect("emulator (run `bash scripts/setup.sh` first)");
        let sdk = emulator::sdk_config(&emulator.endpoint).await;
        let suffix = ulid::Ulid::new().to_string()[16..].to_owned();
        let names = ResourceNames::with_suffix(&suffix);
        let provisioned = provision(&sdk, &names).await.expect("provisioning");
        let mut settings = Settings::new(&names.table, &provisioned.queue_url, &names.bucket);
        settings.models.default_model = shared::models::PLAIN_BACKGROUND.into();
        // As the local runner: the legacy clients' rembg models need weights the test segmenter
        // does not have.
        settings.models.compat_model = Some(shared::models::PLAIN_BACKGROUND.into());
        settings.auth.jwt_secret = Some(JWT_SECRET.into());
        let env = Self {
            emulator,
            sdk,
            provisioned,
            settings,
            suffix,
        };
        env.put_key(ANONYMOUS_KEY, "anonymous", "jobs:read,jobs:write")
            .await;
        env
    }

    async fn put_key(&self, secret: &str, owner: &str, scopes: &str) {
        use shared::core::ApiKeyStore;
        let hash = shared::auth::hash_api_key(secret);
        let record = shared::auth::ApiKeyRecord {
            key_id: format!("key_{}", &hash[..16]),
            hash,
            owner: shared::job::OwnerId::parse(owner).unwrap(),
            name: "test".into(),
            scopes: shared::auth::parse_scopes(scopes).unwrap(),
            created_at: time::OffsetDateTime::now_utc(),
            last_used_at: None,
            revoked: false,
        };
        self.aws().keys.put_key(&record).await.unwrap();
    }

    pub fn aws(&self) -> Aws {
        Aws::with_sdk_config(&self.sdk, &self.settings)
    }

    /// The API's submitter over `jobs`, `queue` and `blobs` (the emulator's, or a test's
    /// wrappers of them), with this environment's settings and the inputs' URL fetch policy.
    pub fn submitter(
        &self,
        jobs: Arc<dyn shared::core::JobStore>,
        queue: Arc<dyn shared::core::JobQueue>,
        blobs: Arc<dyn shared::core::BlobStore>,
    ) -> shared::service::JobSubmitter {
        let fetch = shared::egress::FetchPolicy::for_inputs(&self.settings);
        shared::service::JobSubmitter::new(
            jobs,
            queue,
            blobs,
            Arc::new(self.settings.clone()),
            Arc::new(shared::adapters::PublicHttp::new(fetch).expect("an HTTP client")),
        )
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk)
                .force_path_style(true)
                .build(),
        )
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    /// Creates an API key for `owner` with `scopes` (comma-separated) and returns the key.
    pub async fn api_key_with(&self, owner: &str, scopes: &str) -> String {
        let key = shared::auth::generate_api_key().unwrap();
        self.put_key(&key.secret, owner, scopes).await;
        key.secret
    }

    /// An HTTP client that authenticates as `owner` (jobs:read + jobs:write) and does not
    /// follow redirects.
    pub async fn client(&self, owner: &str) -> reqwest::Client {
        authed(&self.api_key_with(owner, "jobs:read,jobs:write").await)
    }

    /// Serves only the API Router (no workers: jobs stay queued).
    pub async fn serve_api(&self) -> String {
        let state = imagejobs_api::AppState::new(self.settings.clone(), &self.aws()).unwrap();
        serve(state).await
    }

    /// Serves the API with URL inputs resolved by `names` (no DNS), and `allowed` non-public
    /// addresses reachable (the test's own image host).
    pub async fn serve_api_resolving(
        &self,
        names: &[(&str, &str)],
        allowed: Vec<SocketAddr>,
    ) -> String {
        let table = names
            .iter()
            .map(|(host, ip)| (host.to_string(), vec![ip.parse().unwrap()]))
            .collect();
        let state = imagejobs_api::AppState::new(self.settings.clone(), &self.aws())
            .unwrap()
            .with_url_resolution(
                std::sync::Arc::new(shared::egress::StaticResolver(table)),
                allowed,
            )
            .unwrap();
        serve(state).await
    }
}

async fn serve(state: imagejobs_api::AppState) -> String {
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, imagejobs_local::connection::api_app(state)).await
        });
        format!("http://{addr}")
    }
}

impl TestEnv {
    /// Starts the whole local stack (API + processor + ingest) against `segmenter_url`.
    pub async fn start_stack(&mut self, segmenter_url: &str) -> Stack {
        self.start_stack_sweeping(segmenter_url, None).await
    }

    /// [`Self::start_stack`] with the recovery sweeper running every `sweep_interval`.
    pub async fn start_stack_sweeping(
        &mut self,
        segmenter_url: &str,
        sweep_interval: Option<Duration>,
    ) -> Stack {
        self.start_stack_with(segmenter_url, sweep_interval, 10, None)
            .await
    }

    /// [`Self::start_stack_sweeping`] with `batch_size` records at once and `faults` injected
    /// on the job-path ports (`imagejobs_local::chaos`).
    pub async fn start_stack_with(
        &mut self,
        segmenter_url: &str,
        sweep_interval: Option<Duration>,
        batch_size: i32,
        faults: Option<std::sync::Arc<shared::faults::Faults>>,
    ) -> Stack {
        self.settings.segmenter.url = Some(segmenter_url.to_owned());
        Stack::start(
            &self.sdk,
            StackConfig {
                api_addr: Some("127.0.0.1:0".parse().unwrap()),
                settings: self.settings.clone(),
                provisioned: self.provisioned.clone(),
                poll_wait: Duration::from_secs(1),
                batch_size,
                sweep_interval,
                faults,
            },
        )
        .await
        .expect("local stack")
    }

    /// The e-mails the emulator's SES accepted, from moto's model dump
    /// (`/moto-api/data.json`: `source`, `destinations.ToAddresses`, `subject`, `body`).
    pub async fn ses_messages(&self) -> Vec<serde_json::Value> {
        let data: serde_json::Value =
            reqwest::get(format!("{}/moto-api/data.json", self.emulator.endpoint))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        data["ses"]["Message"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Asserts that no job, idempotency record, queue message or object exists: what every
    /// refused request must leave behind.
    pub async fn assert_nothing_stored(&self) {
        assert_eq!(self.table_items().await, 0, "no job or idempotency record");
        assert_eq!(self.queued_messages().await, 0, "no queue message");
        assert!(self.objects().await.is_empty(), "no stored object");
    }

    /// Number of job, idempotency and capability (seed 003 `processing_id`) records in the jobs
    /// table.
    pub async fn table_items(&self) -> usize {
        let out = self
            .dynamodb()
            .scan()
            .table_name(&self.settings.resources.table)
            .send()
            .await
            .unwrap();
        out.items
            .unwrap_or_default()
            .iter()
            .filter(|item| {
                item.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|sk| {
                        sk.starts_with("JOB#")
                            || sk.starts_with("IDEM#")
                            || sk.starts_with("CAPABILITY#")
                    })
            })
            .count()
    }

    /// The owner's in-flight counter (queued + processing jobs), 0 when never written.
    pub async fn in_flight(&self, owner: &str) -> i64 {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let out = self
            .dynamodb()
            .get_item()
            .table_name(&self.settings.resources.table)
            .key("pk", V::S(format!("OWNER#{owner}")))
            .key("sk", V::S("QUOTA#in-flight".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        out.item
            .and_then(|i| {
                i.get("count")
                    .and_then(|v| v.as_n().ok())
                    .map(|n| n.parse().unwrap())
            })
            .unwrap_or(0)
    }

    /// Messages waiting or in flight on the jobs queue.
    pub async fn queued_messages(&self) -> usize {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .sqs()
            .get_queue_attributes()
            .queue_url(&self.provisioned.queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .unwrap();
        out.attributes
            .unwrap_or_default()
            .values()
            .map(|v| v.parse::<usize>().unwrap())
            .sum()
    }

    /// Objects in the bucket.
    pub async fn objects(&self) -> Vec<String> {
        let out = self
            .s3()
            .list_objects_v2()
            .bucket(&self.settings.resources.bucket)
            .send()
            .await
            .unwrap();
        out.contents
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| o.key)
            .collect()
    }
}

/// Starts an `imagejobs-local worker` process on `env`'s stack: [`spawn_local`] with `worker`.
///
/// # Panics
/// If the process cannot be started or does not come up within 60 s.
pub fn spawn_worker(
    env: &TestEnv,
    vars: &[(String, String)],
    on_line: impl Fn(&str) + Send + Sync + 'static,
) -> std::process::Child {
    spawn_local(env, "worker", vars, on_line)
}

/// Starts `imagejobs-local <subcommand>` (`worker`, or `serve` with `API_ADDR` in `vars`) on
/// `env`'s stack (its emulator and resource suffix, `RUST_LOG=info`, no colour), with `vars`
/// added to its environment, and returns once it logs that it is up (its queue workers are
/// polling and, for `serve`, its API listens; at most 60 s). Every line it writes to stdout or
/// stderr is passed to `on_line` from a thread per pipe, which keeps draining the pipe so a
/// full one never blocks the process. The caller owns the child (kill it by its own PID).
///
/// # Panics
/// If the process cannot be started or does not come up within 60 s.
pub fn spawn_local(
    env: &TestEnv,
    subcommand: &str,
    vars: &[(String, String)],
    on_line: impl Fn(&str) + Send + Sync + 'static,
) -> std::process::Child {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_imagejobs-local"))
        .arg(subcommand)
        .env("AWS_ENDPOINT_URL", &env.emulator.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("RESOURCE_SUFFIX", &env.suffix)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("imagejobs-local {subcommand}: {e}"));
    let on_line = std::sync::Arc::new(on_line);
    let (up, ready) = std::sync::mpsc::channel();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let up = up.clone();
        let on_line = on_line.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                on_line(&line);
                if line.contains("worker up") || line.contains("local stack up") {
                    let _ = up.send(());
                }
            }
        });
    }
    ready
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("imagejobs-local {subcommand} is up within 60 s"));
    child
}

/// Polls the jobs table every 500 ms until every job in `ids` (of `owner`) has ended or
/// `within` has passed; returns the ended ones. Panics when a job is missing: an accepted job
/// is never lost.
pub async fn wait_until_ended(
    env: &TestEnv,
    owner: &shared::job::OwnerId,
    ids: &[ulid::Ulid],
    within: std::time::Duration,
) -> Vec<shared::job::Job> {
    use shared::core::JobStore;
    let jobs = env.aws().jobs;
    let started = std::time::Instant::now();
    loop {
        let mut ended = Vec::new();
        for id in ids {
            let job = jobs
                .get(owner, *id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("accepted job {id} lost"));
            if job.status.is_terminal() {
                ended.push(job);
            }
        }
        if ended.len() == ids.len() || started.elapsed() >= within {
            return ended;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

pub fn sample_photo() -> Vec<u8> {
    std::fs::read(emulator::workspace_root().join("assets/sample-rocket.jpg")).unwrap()
}

/// A `remove_background` job of [`sample_photo`] (uploaded) with `plain-background`, as the
/// API's `POST /v1/jobs` would submit it.
pub fn photo_submission(
    owner: &shared::job::OwnerId,
    idempotency_key: Option<&str>,
) -> shared::service::Submission {
    shared::service::Submission {
        owner: owner.clone(),
        operation: shared::job::Operation::RemoveBackground(
            shared::operation::remove_background::RemoveBackgroundParams::with_model(
                shared::models::PLAIN_BACKGROUND,
            ),
        ),
        input: Some(shared::service::InputRef::Upload(sample_photo().into())),
        extra_inputs: Vec::new(),
        idempotency_key: idempotency_key.map(str::to_owned),
        notify: Default::default(),
        request_id: None,
    }
}

/// Starts the real segmenter in-process with no weights (plain-background only).
pub async fn start_segmenter() -> (String, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let mut config = imagejobs_segmenter::Config::new(dir.path());
    config.host = "127.0.0.1".parse().unwrap();
    config.port = 0;
    let (addr, _task): (SocketAddr, _) = imagejobs_segmenter::spawn(config).await.unwrap();
    (format!("http://{addr}"), dir)
}

/// A real portrait photograph (PNG, 512×512): the astronaut Eileen Collins in front of a flag
/// and a model of the shuttle, a cluttered background (`assets/README.md`).
pub fn portrait_photo() -> Vec<u8> {
    std::fs::read(emulator::workspace_root().join("assets/portrait-astronaut.png")).unwrap()
}

/// The real weights installed by `scripts/fetch_models.py` (`.local/models`); panics with
/// instructions when `name`'s file is missing, so these tests never pass without them.
pub fn real_model(name: &str) -> PathBuf {
    let spec = shared::models::find(name).expect("a catalog model");
    let path = emulator::workspace_root()
        .join(".local/models")
        .join(spec.file);
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/setup.sh` (it runs scripts/fetch_models.py)",
        path.display()
    );
    path
}

/// The ONNX Runtime library that setup found (`.local/ort-dylib-path`).
pub fn ort_dylib() -> PathBuf {
    let file = emulator::workspace_root().join(".local/ort-dylib-path");
    let path = std::fs::read_to_string(&file)
        .unwrap_or_else(|_| panic!("{} is missing: run `bash scripts/setup.sh`", file.display()));
    PathBuf::from(path.trim())
}

/// Sends `request` and reads the answer as JSON (panics on transport or JSON errors).
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Checks a compatibility job that asked for `asked` (not deployed) and ran the best loaded
/// model `ran` as a stand-in, whose recorded foreground fraction matches the cutout's `kept`.
pub fn assert_stand_in(job: &serde_json::Value, asked: &str, ran: &str, kept: f64) {
    assert_eq!(job["params"]["model"], asked, "the model asked for: {job}");
    assert_eq!(job["params"]["model_fallback"], true, "{job}");
    assert_eq!(
        job["result"]["engine"], ran,
        "the best loaded model ran: {job}"
    );
    let fraction = job["result"]["foreground_fraction"].as_f64().unwrap();
    assert!(
        (fraction - kept).abs() < 0.01,
        "{fraction} recorded vs the cutout's {kept}"
    );
}

/// Starts the real segmenter in-process serving the real weights of `models` (links to the
/// files in `.local/models`) with no `DEFAULT_MODEL`, so the best of them is the default.
pub async fn start_segmenter_with(models: &[&str]) -> (String, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    for name in models {
        let source = real_model(name);
        std::os::unix::fs::symlink(&source, dir.path().join(source.file_name().unwrap())).unwrap();
    }
    let mut config = imagejobs_segmenter::Config::new(dir.path());
    config.host = "127.0.0.1".parse().unwrap();
    config.port = 0;
    config.ort_dylib_path = Some(ort_dylib());
    let (addr, _task): (SocketAddr, _) = imagejobs_segmenter::spawn(config).await.unwrap();
    (format!("http://{addr}"), dir)
}

/// A unique empty directory under the target dir, removed on drop.
pub mod tempdir {
    use super::PathBuf;

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("imagejobs-test-{}", ulid::Ulid::new()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A client sending `Authorization: Bearer {credential}`, not following redirects.
pub fn authed(credential: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {credential}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

/// The HS256 secret every [`TestEnv`]'s API signs tokens with.
pub const JWT_SECRET: &str = "integration-test-signing-secret-0123456789";

/// A multipart body with the image as field `file`.
pub fn upload(bytes: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name("photo.jpg"),
    )
}

/// The key every [`TestEnv`] creates for owner `anonymous` (jobs:read + jobs:write).
pub const ANONYMOUS_KEY: &str = "ij_live_00000000000000000000000000000000000000000000a0a0";

/// A client authenticated as owner `anonymous` with [`ANONYMOUS_KEY`].
pub fn anonymous() -> reqwest::Client {
    authed(ANONYMOUS_KEY)
}

/// An unauthenticated client that does not follow redirects.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Asserts an error response: status, the stable code, and the JSON shape.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    let got = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("error bodies are JSON");
    assert_eq!(got, status, "status for {body}");
    assert_eq!(body["error"]["code"], code, "code in {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "message in {body}"
    );
    body
}

/// A response's `Retry-After` in delay-seconds (RFC 9110 §10.2.3, the form the API sends), or
/// `None` when it is absent or not a whole number of seconds.
pub fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let value = resp.headers().get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Serves `app` on 127.0.0.1 (a stand-in for a remote host) and returns its address.
pub async fn serve_router(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The shared virtualenv's Python (moto, requests, standardwebhooks), for running legacy
/// clients as written.
pub fn venv_python() -> PathBuf {
    let python = emulator::workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `bash scripts/setup.sh`",
        python.display()
    );
    python
}

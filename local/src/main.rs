//! `imagejobs-local`: provision the emulator, serve the whole stack locally, inspect results.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use imagejobs_local::provision::{ResourceNames, provision};
use imagejobs_local::runner::{Stack, StackConfig};
use shared::config::Settings;

/// The local default model: ISNet fp16, the best of the weights setup installs.
const LOCAL_DEFAULT_MODEL: &str = "isnet";

#[derive(Parser)]
#[command(
    version,
    about = "Run imagejobs locally against the AWS emulator (AWS_ENDPOINT_URL)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the table, queues and bucket on the emulator; print the functions' environment.
    Provision,
    /// Provision, then serve the API and run the processor and ingest handlers until Ctrl-C.
    Serve {
        /// Address the API listens on.
        #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:3000")]
        addr: SocketAddr,
        /// HS256 secret for `POST /v1/auth/token` (default: a random one per run).
        #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
        jwt_secret: Option<String>,
        /// Comma-separated origins allowed by CORS (e.g. http://localhost:5173).
        #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
        cors_allowed_origins: Vec<String>,
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Provision (idempotent), then run the processor, ingest and the recovery sweeper without
    /// the API until Ctrl-C: one more processor process beside `serve`, as Lambda runs several
    /// (the chaos test kills and restarts these).
    Worker {
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Print the dimensions and alpha statistics of an image file as JSON.
    Inspect {
        /// The image.
        file: PathBuf,
    },
    /// Write a before/after PNG: the original beside the cutout over a checkerboard.
    Preview {
        /// The original image.
        original: PathBuf,
        /// The cutout (an image with alpha).
        cutout: PathBuf,
        /// Where to write the PNG.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    shared::telemetry::init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imagejobs-local: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Inspect { file } => {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let stats = imagejobs_local::inspect::alpha_stats(&bytes)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&stats).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Command::Preview {
            original,
            cutout,
            output,
        } => {
            let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            let view = imagejobs_local::preview::side_by_side(&read(&original)?, &read(&cutout)?)?;
            view.save_with_format(&output, image::ImageFormat::Png)
                .map_err(|e| format!("{}: {e}", output.display()))?;
            println!("{}", output.display());
            Ok(())
        }
        Command::Provision => {
            let sdk = emulator_sdk_config().await?;
            let p = provision(&sdk, &ResourceNames::local())
                .await
                .map_err(|e| e.to_string())?;
            println!("export JOBS_TABLE={}", p.names.table);
            println!("export JOBS_QUEUE_URL={}", p.queue_url);
            println!("export IMAGES_BUCKET={}", p.names.bucket);
            println!("export DEAD_LETTER_QUEUE_ARN={}", p.dead_letter_queue_arn);
            Ok(())
        }
        Command::Serve {
            addr,
            jwt_secret,
            cors_allowed_origins,
            stack,
        } => {
            let (sdk, mut config) = stack_config(stack).await?;
            config.api_addr = Some(addr);
            config.settings.auth.cors_allowed_origins = cors_allowed_origins;
            config.settings.auth.jwt_secret = Some(match jwt_secret {
                Some(s) => s,
                None => shared::auth::generate_api_key()?.hash,
            });
            run_until_stopped(&sdk, config).await
        }
        Command::Worker { stack } => {
            let (sdk, config) = stack_config(stack).await?;
            run_until_stopped(&sdk, config).await
        }
    }
}

/// What `serve` and `worker` share: the resources, the segmenter, the models, egress, and the
/// processor's concurrency.
#[derive(clap::Args)]
struct StackArgs {
    /// Base URL of the segmenter container.
    #[arg(long, env = "SEGMENTER_URL", default_value = "http://127.0.0.1:8080")]
    segmenter_url: String,
    /// Engine used when a request names none. Unset or empty: `isnet` (ISNet fp16, which
    /// `scripts/fetch_models.py` installs into the segmenter's MODEL_DIR).
    #[arg(long, env = "DEFAULT_MODEL")]
    default_model: Option<String>,
    /// Engine the compatibility routes run whatever model a legacy client names. Unset or
    /// empty (the default): the client's model, or the best loaded neural model when the
    /// segmenter lacks its weights.
    #[arg(long, env = "COMPAT_MODEL")]
    compat_model: Option<String>,
    /// Accept http:// input URLs (never in production).
    #[arg(long, env = "ALLOW_HTTP_URLS")]
    allow_http_urls: bool,
    /// Let input URLs and webhooks reach private and loopback addresses (never in
    /// production; a webhook receiver on 127.0.0.1 needs it).
    #[arg(long, env = "ALLOW_PRIVATE_URLS")]
    allow_private_urls: bool,
    /// Jobs-queue records worked on at once (1–10), each freed slot refilled by the next
    /// receive: the processor's concurrency, as `ProcessorMaxConcurrency` bounds it on AWS.
    /// The default matches the segmenter's `QUEUE_DEPTH` (4 per model), so a burst waits in
    /// SQS instead of overloading it.
    #[arg(long, env = "PROCESSOR_BATCH_SIZE", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=10))]
    batch_size: i32,
    /// Suffix of the resource names (`imagejobs-jobs-SUFFIX`, …); unset: the local names.
    /// Processes given the same suffix share one stack.
    #[arg(long, env = "RESOURCE_SUFFIX")]
    resource_suffix: Option<String>,
    /// Fault injection on the job-path ports for chaos runs (never in production):
    /// `seed=N,rate=R` with optional per-kind rates (`error`, `commit_then_error`, `conflict`,
    /// `duplicate`), e.g. `seed=42,rate=0.05`, and an optional targeted abort
    /// (`abort=job_write|provider_submit|s3_put|terminal_write:N`: the process ends with
    /// SIGABRT right after its Nth successful call there). Printed at start so the run can be
    /// replayed.
    #[arg(long, env = "FAULTS")]
    faults: Option<String>,
    /// Seconds before a segmenter call gives up (`SEGMENTER_TIMEOUT_SECONDS`, default 40, as on
    /// Lambda); a chaos run's hanging fake segmenter makes it shorter.
    #[arg(long, env = "SEGMENTER_TIMEOUT_SECONDS")]
    segmenter_timeout_seconds: Option<u64>,
}

/// The emulator's SDK config and the stack `args` describe, without an API (`serve` adds
/// one): resources provisioned, settings from the flags, the provider, notification and job
/// sections from the environment as on Lambda.
async fn stack_config(args: StackArgs) -> Result<(aws_config::SdkConfig, StackConfig), String> {
    let default_model = args
        .default_model
        .as_deref()
        .and_then(shared::env::non_empty)
        .unwrap_or(LOCAL_DEFAULT_MODEL)
        .to_owned();
    if !shared::models::is_known(&default_model) {
        return Err(format!("unknown DEFAULT_MODEL '{default_model}'"));
    }
    let compat_model = args
        .compat_model
        .as_deref()
        .and_then(shared::env::non_empty)
        .map(str::to_owned);
    if let Some(m) = compat_model
        .as_deref()
        .filter(|m| !shared::models::is_known(m))
    {
        return Err(format!("unknown COMPAT_MODEL '{m}'"));
    }
    let sdk = emulator_sdk_config().await?;
    let names = match args
        .resource_suffix
        .as_deref()
        .and_then(shared::env::non_empty)
    {
        Some(suffix) => ResourceNames::with_suffix(suffix),
        None => ResourceNames::local(),
    };
    let provisioned = provision(&sdk, &names).await.map_err(|e| e.to_string())?;
    let mut settings = Settings::new(
        &provisioned.names.table,
        &provisioned.queue_url,
        &provisioned.names.bucket,
    );
    settings.segmenter.url = Some(args.segmenter_url);
    if let Some(seconds) = args.segmenter_timeout_seconds {
        settings.segmenter.timeout = Duration::from_secs(seconds);
    }
    let faults = match args.faults.as_deref().and_then(shared::env::non_empty) {
        Some(spec) => {
            let plan = shared::faults::FaultPlan::parse(spec).map_err(|e| e.to_string())?;
            // On stdout as well as in the log: the line a replay needs.
            println!("FAULTS={plan}");
            tracing::warn!(plan = %plan, "fault injection on (replay with FAULTS={plan})");
            Some(std::sync::Arc::new(shared::faults::Faults::new(plan)))
        }
        None => None,
    };
    settings.models.default_model = default_model;
    settings.models.compat_model = compat_model;
    settings.egress.allow_http_urls = args.allow_http_urls;
    settings.egress.allow_private_urls = args.allow_private_urls;
    // The provider, notification and job sections come from the environment as on Lambda (the
    // resources come from provisioning, the rest from the flags above). The sender is
    // verified on the emulator's SES so e-mail notifications are accepted (read them back at
    // /moto-api/data.json, "ses").
    let env = shared::env::Env::process();
    settings.providers =
        shared::providers::ProviderSettings::load(&env).map_err(|e| e.to_string())?;
    settings.notifications =
        shared::config::NotifySettings::load(&env).map_err(|e| e.to_string())?;
    settings.jobs = shared::config::JobSettings::load(&env).map_err(|e| e.to_string())?;
    if let Some(from) = &settings.notifications.from_email {
        imagejobs_local::provision::verify_email_identity(&sdk, from)
            .await
            .map_err(|e| e.to_string())?;
    }
    let config = StackConfig {
        api_addr: None,
        settings,
        provisioned,
        poll_wait: Duration::from_secs(2),
        batch_size: args.batch_size,
        // SweeperFunction runs every minute on AWS; locally a job whose message was lost is
        // sent again within seconds of its due time.
        sweep_interval: Some(Duration::from_secs(5)),
        faults,
    };
    Ok((sdk, config))
}

/// Runs `config` until Ctrl-C or SIGTERM, then lets in-flight batches finish.
async fn run_until_stopped(sdk: &aws_config::SdkConfig, config: StackConfig) -> Result<(), String> {
    let stack = Stack::start(sdk, config).await.map_err(|e| e.to_string())?;
    match stack.api_addr {
        Some(addr) => {
            tracing::info!(api = %format!("http://{addr}"), "local stack up; Ctrl-C to stop")
        }
        None => tracing::info!("worker up (processor, ingest, sweeper); Ctrl-C to stop"),
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    stack.shutdown().await;
    Ok(())
}

/// The local runner only ever targets the emulator: refuse to provision real AWS by accident.
async fn emulator_sdk_config() -> Result<aws_config::SdkConfig, String> {
    if !shared::adapters::uses_custom_endpoint() {
        return Err(
            "AWS_ENDPOINT_URL is not set: the local runner targets the AWS emulator (see README)"
                .into(),
        );
    }
    shared::adapters::aws_sdk_config()
        .await
        .map_err(|e| e.to_string())
}

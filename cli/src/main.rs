//! `imagejobs`: the command-line client of the imagejobs API.
//!
//! ```text
//! imagejobs remove photo.jpg -o out.png
//! imagejobs remove photos/ -o cutouts/ --model u2netp --concurrency 8
//! imagejobs jobs list --status succeeded
//! ```
//!
//! Configuration comes from flags or the environment (`IMAGEJOBS_URL`, `IMAGEJOBS_API_KEY`).
//! Exit status: 0 success, 1 a job failed or the API refused a request, 2 usage, 130 Ctrl-C.

mod client;
mod commands;
mod error;
mod inputs;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::CliError;

const EXIT_STATUS_HELP: &str = "\
Exit status: 0 success; 1 a job failed, the API refused a request, or it could not be reached;
2 usage (bad flags, missing API key, unusable paths); 130 interrupted (Ctrl-C: no partial
output file is left behind).";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "imagejobs",
    version,
    about = "Remove backgrounds, relight, edit and generate images with the imagejobs API",
    after_help = EXIT_STATUS_HELP
)]
pub struct Cli {
    /// Base URL of the API (with the stage path on API Gateway, e.g. https://…/prod).
    #[arg(
        long,
        env = "IMAGEJOBS_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    pub url: String,
    /// API key (`ij_live_…`) or access token, sent as `Authorization: Bearer`.
    #[arg(long, env = "IMAGEJOBS_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print machine-readable JSON on stdout (one object per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to wait for each job to finish, in seconds, before giving up (the job keeps
    /// running on the server; `imagejobs jobs wait ID` picks it up).
    #[arg(long, default_value_t = 600, value_name = "SECONDS", global = true)]
    pub timeout: u64,
    /// Limit of each HTTP request, in seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS", global = true)]
    pub request_timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Remove the background of images (files, folders or glob patterns).
    Remove(RemoveArgs),
    /// Replace the background of a photo and relight its subject (Stability).
    Relight(RelightArgs),
    /// Edit an image as a prompt says, with optional reference images (fal.ai Seedream).
    Edit(EditArgs),
    /// Generate images from a prompt, optionally from a photo of a person (fal.ai Seedream).
    Generate(GenerateArgs),
    /// List, read, wait for and cancel jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
}

/// Options shared by every command that submits jobs.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// Files larger than this many bytes go through `POST /v1/uploads` (a presigned S3 PUT)
    /// instead of the request body. The default stays under API Gateway's 10 MB and Lambda's
    /// 6 MB (base64-encoded) request limits.
    #[arg(
        long,
        env = "IMAGEJOBS_UPLOAD_THRESHOLD",
        default_value_t = 4 * 1024 * 1024,
        value_name = "BYTES"
    )]
    pub upload_threshold: u64,
    /// Seconds the API holds each submission open for the job to finish (`Prefer: wait=N`,
    /// 0–25) before the CLI switches to polling.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=25), value_name = "SECONDS")]
    pub wait: u64,
}

/// `imagejobs remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Images, folders (their .jpg/.jpeg/.png/.webp files) or glob patterns.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
    /// Output file (one input) or folder (several, or a path ending in `/`); default: beside
    /// each input as NAME-nobg.EXT.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Segmentation model (e.g. u2net, u2netp, isnet-general-use, birefnet-general); default:
    /// the server's.
    #[arg(short, long)]
    pub model: Option<String>,
    /// Output format; default: from -o's extension, else png.
    #[arg(short, long, value_parser = ["png", "webp", "jpeg", "jpg"])]
    pub format: Option<String>,
    /// Fill the background with this colour (#rrggbb or #rrggbbaa) instead of transparency;
    /// required for jpeg.
    #[arg(short = 'b', long, value_name = "COLOR")]
    pub background_color: Option<String>,
    /// Scale of the output, 0.1–1.0 of the original size.
    #[arg(short, long)]
    pub scale: Option<f64>,
    /// Write the grey mask instead of the cutout.
    #[arg(long)]
    pub only_mask: bool,
    /// JPEG quality, 1–100.
    #[arg(short, long)]
    pub quality: Option<u8>,
    /// Images in flight at once.
    #[arg(short = 'j', long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub concurrency: u64,
    /// Shared submission options.
    #[command(flatten)]
    pub submit: SubmitArgs,
}

/// `imagejobs relight`.
#[derive(Debug, Args)]
pub struct RelightArgs {
    /// The subject photo.
    pub subject: PathBuf,
    /// Output file; default: beside the subject as NAME-relit.EXT.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// The new background, described (this or --background-reference is required).
    #[arg(long)]
    pub background_prompt: Option<String>,
    /// An image whose style the new background takes.
    #[arg(long, value_name = "IMAGE")]
    pub background_reference: Option<PathBuf>,
    /// The subject, described.
    #[arg(long)]
    pub foreground_prompt: Option<String>,
    /// What the image should not show.
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// An image whose lighting the result takes.
    #[arg(long, value_name = "IMAGE")]
    pub light_reference: Option<PathBuf>,
    /// Where the light comes from.
    #[arg(long, value_parser = ["left", "right", "above", "below"])]
    pub light_direction: Option<String>,
    /// Light strength, 0–1.
    #[arg(long)]
    pub light_strength: Option<f64>,
    /// How much of the original subject to keep, 0–1.
    #[arg(long)]
    pub preserve_subject: Option<f64>,
    /// How much of the original background's depth to keep, 0–1.
    #[arg(long)]
    pub background_depth: Option<f64>,
    /// Keep the original background (relight only).
    #[arg(long)]
    pub keep_background: bool,
    /// Seed, 0–4294967294.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output format; default: from -o's extension, else png.
    #[arg(short, long, value_parser = ["png", "webp", "jpeg"])]
    pub format: Option<String>,
    /// Shared submission options.
    #[command(flatten)]
    pub submit: SubmitArgs,
}

/// `imagejobs edit`.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// The image to edit.
    pub image: PathBuf,
    /// What to change.
    #[arg(short, long)]
    pub prompt: String,
    /// Output file (further outputs: NAME-1.EXT, …); default: beside the image as
    /// NAME-edited.png.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Reference images (up to 9), sent as reference_1 … reference_9.
    #[arg(short, long = "reference", value_name = "IMAGE")]
    pub references: Vec<PathBuf>,
    /// Shared generation options.
    #[command(flatten)]
    pub gen_opts: GenerationArgs,
    /// Shared submission options.
    #[command(flatten)]
    pub submit: SubmitArgs,
}

/// `imagejobs generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to draw (required for modes text and memory).
    #[arg(short, long)]
    pub prompt: Option<String>,
    /// text: from the prompt alone; memory: the person in --image in the prompt's scene;
    /// subject: a portrait of the person in --image.
    #[arg(long, default_value = "text", value_parser = ["text", "memory", "subject"])]
    pub mode: String,
    /// The person's photo (modes memory and subject) or a reference (mode text).
    #[arg(short, long, value_name = "IMAGE")]
    pub image: Option<PathBuf>,
    /// Output file (further outputs: NAME-1.EXT, …).
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Inference steps, 1–150 (recorded; Seedream has no step count).
    #[arg(long)]
    pub steps: Option<u32>,
    /// Shared generation options.
    #[command(flatten)]
    pub gen_opts: GenerationArgs,
    /// Shared submission options.
    #[command(flatten)]
    pub submit: SubmitArgs,
}

/// Options of `edit` and `generate`.
#[derive(Debug, Args)]
pub struct GenerationArgs {
    /// Number of outputs, 1–6.
    #[arg(short, long)]
    pub num_images: Option<u32>,
    /// square_hd, square, portrait_4_3, portrait_16_9, landscape_4_3, landscape_16_9, auto,
    /// auto_2K, auto_4K, or WIDTHxHEIGHT (each ≤ 4096).
    #[arg(long, value_name = "SIZE")]
    pub image_size: Option<String>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Turn the provider's safety checker off.
    #[arg(long)]
    pub no_safety_checker: bool,
}

/// `imagejobs jobs …`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Jobs per page, 1–100.
        #[arg(short, long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Only jobs with this status.
        #[arg(short, long, value_parser = ["queued", "processing", "succeeded", "failed", "canceled"])]
        status: Option<String>,
        /// Continue from a previous page's next_cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Follow next_cursor to the last page.
        #[arg(long)]
        all: bool,
    },
    /// Show one job.
    Get {
        /// The job id.
        id: String,
    },
    /// Wait for a job to finish, and optionally download its outputs.
    Wait {
        /// The job id.
        id: String,
        /// Where to write the result (further outputs: NAME-1.EXT, …).
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Cancel a queued or processing job.
    Cancel {
        /// The job id.
        id: String,
    },
}

fn main() -> ExitCode {
    // clap prints its own usage errors and exits with 2.
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_FAILED as u8);
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = commands::run(cli) => r,
            // Dropping the command's future drops every open output file, whose temporary file
            // is then removed: Ctrl-C never leaves a partial image.
            _ = tokio::signal::ctrl_c() => Err(CliError::Interrupted),
        }
    });
    match result {
        Ok(()) => ExitCode::from(error::EXIT_OK as u8),
        Err(e) => {
            report(&e, json);
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Prints a command's final error: text on stderr, or `{"error": …}` on stdout with `--json`.
/// A batch's summary goes to stderr either way (its inputs were reported one by one).
fn report(e: &CliError, json: bool) {
    if json && !matches!(e, CliError::Batch { .. }) {
        println!("{}", serde_json::json!({"error": e.to_json()}));
    } else {
        eprintln!("error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        // clap's own checks: no clashing short flags or names across every subcommand.
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_and_defaults() {
        let cli =
            Cli::try_parse_from(["imagejobs", "remove", "a.jpg", "-j", "8", "--json"]).unwrap();
        assert!(cli.json);
        let Command::Remove(args) = cli.command else {
            panic!("remove");
        };
        assert_eq!(args.concurrency, 8);
        assert_eq!(args.submit.wait, 20);
        let err =
            Cli::try_parse_from(["imagejobs", "remove", "a.jpg", "--wait", "26"]).unwrap_err();
        assert_eq!(err.exit_code(), error::EXIT_USAGE);
        let err = Cli::try_parse_from(["imagejobs", "remove", "a.jpg", "-j", "0"]).unwrap_err();
        assert_eq!(err.exit_code(), error::EXIT_USAGE);
    }
}

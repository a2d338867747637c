//! The subcommands: build each job's multipart fields, submit, wait, download, report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::{self, Api, Field};
use crate::error::CliError;
use crate::inputs;
use crate::{
    Cli, Command, EditArgs, GenerateArgs, JobsCommand, RelightArgs, RemoveArgs, SubmitArgs,
};

/// What every command needs: the API, the output mode, the per-job wait limit.
struct Ctx {
    api: Api,
    json: bool,
    timeout: Duration,
}

/// One job to submit: its images (multipart field name, file) and its text parameters.
struct JobSpec {
    images: Vec<(String, PathBuf)>,
    params: Vec<(String, String)>,
}

/// A finished job and how it was sent.
struct Done {
    job: Value,
    /// Whether an image went through `POST /v1/uploads`.
    uploaded: bool,
}

/// Runs the parsed command line.
///
/// # Errors
/// [`CliError::Usage`] without an API key or for unusable paths; whatever the command meets.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let key = cli
        .api_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            CliError::Usage("no API key: pass --api-key or set IMAGEJOBS_API_KEY".into())
        })?;
    let ctx = Ctx {
        api: Api::new(&cli.url, key, Duration::from_secs(cli.request_timeout))?,
        json: cli.json,
        timeout: Duration::from_secs(cli.timeout),
    };
    match cli.command {
        Command::Remove(args) => remove(&ctx, args).await,
        Command::Relight(args) => relight(&ctx, args).await,
        Command::Edit(args) => edit(&ctx, args).await,
        Command::Generate(args) => generate(&ctx, args).await,
        Command::Jobs(cmd) => jobs(&ctx, cmd).await,
    }
}

fn push(params: &mut Vec<(String, String)>, name: &str, value: Option<impl ToString>) {
    if let Some(v) = value {
        params.push((name.to_owned(), v.to_string()));
    }
}

/// `imagejobs remove`: every input through `remove_background`, `--concurrency` at a time.
async fn remove(ctx: &Ctx, args: RemoveArgs) -> Result<(), CliError> {
    let files = inputs::expand(&args.inputs)?;
    let single_file_output = args
        .output
        .as_deref()
        .filter(|o| files.len() == 1 && !inputs::is_folder(o));
    let format = args.format.clone().or_else(|| {
        single_file_output
            .and_then(inputs::format_of)
            .map(str::to_owned)
    });
    let ext = inputs::extension_of(format.as_deref().unwrap_or("png"));
    let outputs = inputs::plan_outputs(&files, args.output.as_deref(), ext, "-nobg")?;

    let mut params = vec![("operation".to_owned(), "remove_background".to_owned())];
    push(&mut params, "model", args.model.as_ref());
    push(&mut params, "output_format", format.as_ref());
    push(
        &mut params,
        "background_color",
        args.background_color.as_ref(),
    );
    push(&mut params, "scale", args.scale);
    push(&mut params, "quality", args.quality);
    if args.only_mask {
        push(&mut params, "only_mask", Some("true"));
    }

    let total = files.len();
    let bar = progress_bar(total, ctx.json);
    let params = &params;
    let submit = &args.submit;
    let bar_ref = &bar;
    let mut results =
        futures::stream::iter(files.iter().zip(&outputs).map(|(input, out)| async move {
            let started = Instant::now();
            let spec = JobSpec {
                images: vec![("file".to_owned(), input.clone())],
                params: params.clone(),
            };
            let result = async {
                let done = submit_and_wait(ctx, &spec, submit, |status| {
                    if total == 1 {
                        bar_ref.set_message(status.to_owned());
                    }
                })
                .await?;
                download_all(&ctx.api, &done.job, out).await?;
                Ok::<_, CliError>(done)
            }
            .await;
            (input, out, result, started.elapsed())
        }))
        .buffer_unordered(args.concurrency as usize);

    let (mut failed, mut finished) = (0, 0);
    let mut last_error = None;
    while let Some((input, out, result, took)) = results.next().await {
        finished += 1;
        bar.inc(1);
        let counter = if total > 1 {
            format!("[{finished}/{total}] ")
        } else {
            String::new()
        };
        match result {
            Ok(done) => bar.suspend(|| {
                if ctx.json {
                    println!(
                        "{}",
                        json!({"input": input, "output": out, "outputs": outputs_of(&done.job, out),
                               "uploaded": done.uploaded, "seconds": took.as_secs_f64(), "job": done.job})
                    );
                } else {
                    println!(
                        "{counter}{} → {}  ({})",
                        input.display(),
                        out.display(),
                        summary(&done, took)
                    );
                }
            }),
            Err(e) => {
                failed += 1;
                if total > 1 {
                    bar.suspend(|| {
                        if ctx.json {
                            println!("{}", json!({"input": input, "error": e.to_json()}));
                        } else {
                            eprintln!("{counter}{}: error: {e}", input.display());
                        }
                    });
                }
                last_error = Some(e);
            }
        }
    }
    bar.finish_and_clear();
    match last_error {
        // One input: its error is the command's, with its own exit status and message.
        Some(e) if total == 1 => Err(e),
        Some(_) => Err(CliError::Batch { failed, total }),
        None => {
            if total > 1 && !ctx.json {
                eprintln!("{total} of {total} done");
            }
            Ok(())
        }
    }
}

/// `imagejobs relight`.
async fn relight(ctx: &Ctx, args: RelightArgs) -> Result<(), CliError> {
    if args.background_prompt.is_none() && args.background_reference.is_none() {
        return Err(CliError::Usage(
            "relight needs --background-prompt or --background-reference".into(),
        ));
    }
    let format = args.format.clone().or_else(|| {
        args.output
            .as_deref()
            .and_then(inputs::format_of)
            .map(str::to_owned)
    });
    let ext = inputs::extension_of(format.as_deref().unwrap_or("png"));
    let dest = single_output(&args.subject, args.output.as_deref(), ext, "-relit")?;
    let mut images = vec![("subject_image".to_owned(), args.subject.clone())];
    for (name, path) in [
        ("background_reference", &args.background_reference),
        ("light_reference", &args.light_reference),
    ] {
        if let Some(p) = path {
            images.push((name.to_owned(), existing(p)?));
        }
    }
    let mut params = vec![(
        "operation".to_owned(),
        "replace_background_relight".to_owned(),
    )];
    push(
        &mut params,
        "background_prompt",
        args.background_prompt.as_ref(),
    );
    push(
        &mut params,
        "foreground_prompt",
        args.foreground_prompt.as_ref(),
    );
    push(
        &mut params,
        "negative_prompt",
        args.negative_prompt.as_ref(),
    );
    push(
        &mut params,
        "light_source_direction",
        args.light_direction.as_ref(),
    );
    push(&mut params, "light_source_strength", args.light_strength);
    push(
        &mut params,
        "preserve_original_subject",
        args.preserve_subject,
    );
    push(
        &mut params,
        "original_background_depth",
        args.background_depth,
    );
    if args.keep_background {
        push(&mut params, "keep_original_background", Some("true"));
    }
    push(&mut params, "seed", args.seed);
    push(&mut params, "output_format", format.as_ref());
    run_single(
        ctx,
        &args.subject,
        JobSpec { images, params },
        &args.submit,
        &dest,
    )
    .await
}

/// `imagejobs edit`.
async fn edit(ctx: &Ctx, args: EditArgs) -> Result<(), CliError> {
    if args.references.len() > 9 {
        return Err(CliError::Usage(format!(
            "at most 9 --reference images ({} given)",
            args.references.len()
        )));
    }
    let dest = single_output(&args.image, args.output.as_deref(), "png", "-edited")?;
    let mut images = vec![("file".to_owned(), args.image.clone())];
    for (i, r) in args.references.iter().enumerate() {
        images.push((format!("reference_{}", i + 1), existing(r)?));
    }
    let mut params = vec![
        ("operation".to_owned(), "edit".to_owned()),
        ("prompt".to_owned(), args.prompt.clone()),
    ];
    generation_params(&mut params, &args.gen_opts);
    run_single(
        ctx,
        &args.image,
        JobSpec { images, params },
        &args.submit,
        &dest,
    )
    .await
}

/// `imagejobs generate`.
async fn generate(ctx: &Ctx, args: GenerateArgs) -> Result<(), CliError> {
    let mut images = Vec::new();
    if let Some(p) = &args.image {
        images.push(("file".to_owned(), existing(p)?));
    }
    let mut params = vec![
        ("operation".to_owned(), "generate".to_owned()),
        ("mode".to_owned(), args.mode.clone()),
    ];
    push(&mut params, "prompt", args.prompt.as_ref());
    push(&mut params, "num_inference_steps", args.steps);
    generation_params(&mut params, &args.gen_opts);
    let label = args
        .image
        .clone()
        .unwrap_or_else(|| PathBuf::from("(prompt)"));
    run_single(
        ctx,
        &label,
        JobSpec { images, params },
        &args.submit,
        &args.output,
    )
    .await
}

fn generation_params(params: &mut Vec<(String, String)>, g: &crate::GenerationArgs) {
    push(params, "num_images", g.num_images);
    push(params, "image_size", g.image_size.as_ref());
    push(params, "seed", g.seed);
    if g.no_safety_checker {
        push(params, "enable_safety_checker", Some("false"));
    }
}

fn existing(p: &Path) -> Result<PathBuf, CliError> {
    if p.is_file() {
        Ok(p.to_path_buf())
    } else {
        Err(CliError::Usage(format!("{}: no such file", p.display())))
    }
}

/// The output of a one-input command: `-o`, or beside the input as `{stem}{suffix}.{ext}`.
fn single_output(
    input: &Path,
    output: Option<&Path>,
    ext: &str,
    suffix: &str,
) -> Result<PathBuf, CliError> {
    let input = existing(input)?;
    let planned = inputs::plan_outputs(std::slice::from_ref(&input), output, ext, suffix)?;
    Ok(planned.into_iter().next().unwrap_or_default())
}

/// Submits one job, waits for it with a spinner, downloads its outputs, reports.
async fn run_single(
    ctx: &Ctx,
    label: &Path,
    spec: JobSpec,
    submit: &SubmitArgs,
    dest: &Path,
) -> Result<(), CliError> {
    let started = Instant::now();
    let spinner = spinner(ctx.json);
    let done = submit_and_wait(ctx, &spec, submit, |status| {
        spinner.set_message(status.to_owned())
    })
    .await;
    let done = match done {
        Ok(d) => d,
        Err(e) => {
            spinner.finish_and_clear();
            return Err(e);
        }
    };
    spinner.set_message("downloading");
    let written = download_all(&ctx.api, &done.job, dest).await;
    spinner.finish_and_clear();
    let outputs = written?;
    if ctx.json {
        println!(
            "{}",
            json!({"input": label, "output": dest, "outputs": outputs, "uploaded": done.uploaded,
                   "seconds": started.elapsed().as_secs_f64(), "job": done.job})
        );
    } else {
        let shown: Vec<String> = outputs.iter().map(|p| p.display().to_string()).collect();
        println!(
            "{} → {}  ({})",
            label.display(),
            shown.join(", "),
            summary(&done, started.elapsed())
        );
    }
    Ok(())
}

/// Sends the job (files over `--upload-threshold` through `POST /v1/uploads`), then waits for
/// it to end; `Ok` only when it succeeded.
///
/// A 413 that is not the API's own `payload_too_large` comes from a gateway in front of it
/// (API Gateway's 10 MB, Lambda's 6 MB): the job is then sent again with every image uploaded.
async fn submit_and_wait(
    ctx: &Ctx,
    spec: &JobSpec,
    submit: &SubmitArgs,
    on_status: impl FnMut(&str),
) -> Result<Done, CliError> {
    let started = Instant::now();
    let (fields, mut uploaded) = fields(&ctx.api, spec, submit.upload_threshold, false).await?;
    let job = match ctx.api.create_job(&fields, submit.wait).await {
        Err(CliError::Api {
            status: 413, code, ..
        }) if !uploaded && code != "payload_too_large" => {
            let (fields, _) = fields_uploaded(&ctx.api, spec).await?;
            uploaded = true;
            ctx.api.create_job(&fields, submit.wait).await?
        }
        other => other?,
    };
    let job = ctx.api.wait(job, started, ctx.timeout, on_status).await?;
    client::require_succeeded(&job)?;
    Ok(Done { job, uploaded })
}

async fn fields_uploaded(api: &Api, spec: &JobSpec) -> Result<(Vec<Field>, bool), CliError> {
    fields(api, spec, 0, true).await
}

/// The multipart fields of `spec`: each image as a file part, or, over `threshold` bytes (or
/// with `force_upload`), uploaded first and sent as its `s3://` reference (the job image as
/// field `input`, references under their own names); then the parameters. Returns whether
/// anything was uploaded.
async fn fields(
    api: &Api,
    spec: &JobSpec,
    threshold: u64,
    force_upload: bool,
) -> Result<(Vec<Field>, bool), CliError> {
    let mut out = Vec::new();
    let mut uploaded = false;
    for (name, path) in &spec.images {
        // Blocking, but brief (≤ 25 MiB from a local disk); tokio's `fs` feature is not worth
        // a second build of tokio for the workspace.
        let bytes = std::fs::read(path).map_err(|source| CliError::Io {
            path: path.clone(),
            source,
        })?;
        if force_upload || bytes.len() as u64 > threshold {
            let input = api.upload(inputs::sniff(&bytes), bytes).await?;
            let field = if name == "file" || name == "subject_image" {
                "input"
            } else {
                name.as_str()
            };
            out.push(Field::Text(field.to_owned(), input));
            uploaded = true;
        } else {
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into());
            out.push(Field::File(name.clone(), file_name, bytes));
        }
    }
    for (k, v) in &spec.params {
        out.push(Field::Text(k.clone(), v.clone()));
    }
    Ok((out, uploaded))
}

/// Downloads every output of a succeeded job: `dest`, then `dest`-1, -2, … for multi-output jobs.
async fn download_all(api: &Api, job: &Value, dest: &Path) -> Result<Vec<PathBuf>, CliError> {
    let id = client::job_id(job)?;
    let mut written = Vec::new();
    for index in 0..client::output_count(job) {
        let path = inputs::numbered(dest, index);
        api.download_result(id, index, &path).await?;
        written.push(path);
    }
    Ok(written)
}

fn outputs_of(job: &Value, dest: &Path) -> Vec<PathBuf> {
    (0..client::output_count(job))
        .map(|i| inputs::numbered(dest, i))
        .collect()
}

/// `job 01J…, isnet, 640×427, foreground 31%, via upload, 1.2 s`.
fn summary(done: &Done, took: Duration) -> String {
    let job = &done.job;
    let result = &job["result"];
    let mut parts = vec![format!("job {}", job["id"].as_str().unwrap_or("?"))];
    if let Some(engine) = result["engine"].as_str() {
        parts.push(engine.to_owned());
    }
    if let (Some(w), Some(h)) = (result["width"].as_u64(), result["height"].as_u64()) {
        parts.push(format!("{w}×{h}"));
    }
    if let Some(f) = result["foreground_fraction"].as_f64() {
        parts.push(format!("foreground {:.0}%", f * 100.0));
    }
    if done.uploaded {
        parts.push("via upload".into());
    }
    parts.push(format!("{:.1} s", took.as_secs_f64()));
    parts.join(", ")
}

/// A bar for batches on a terminal; hidden with `--json` (indicatif also hides it when stderr
/// is not a terminal).
fn progress_bar(total: usize, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    let style = if total > 1 {
        ProgressStyle::with_template("{bar:30} {pos}/{len} images  {elapsed_precise} (eta {eta})")
    } else {
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
    };
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn spinner(json: bool) -> ProgressBar {
    progress_bar(1, json)
}

/// `imagejobs jobs …`.
async fn jobs(ctx: &Ctx, cmd: JobsCommand) -> Result<(), CliError> {
    match cmd {
        JobsCommand::List {
            limit,
            status,
            cursor,
            all,
        } => {
            let mut cursor = cursor;
            let mut all_jobs = Vec::new();
            let next = loop {
                let page = ctx
                    .api
                    .list_jobs(limit, status.as_deref(), cursor.as_deref())
                    .await?;
                let jobs = page["jobs"].as_array().cloned().unwrap_or_default();
                if !ctx.json {
                    for job in &jobs {
                        println!("{}", job_line(job));
                    }
                }
                all_jobs.extend(jobs);
                let next = page["next_cursor"].clone();
                match next.as_str() {
                    Some(c) if all => cursor = Some(c.to_owned()),
                    _ => break next,
                }
            };
            if ctx.json {
                println!("{}", json!({"jobs": all_jobs, "next_cursor": next}));
            } else if let Some(c) = next.as_str() {
                eprintln!("more: imagejobs jobs list --cursor {c}");
            }
            Ok(())
        }
        JobsCommand::Get { id } => {
            let job = ctx.api.get_job(&id).await?;
            print_job(&job, ctx.json);
            Ok(())
        }
        JobsCommand::Wait { id, output } => {
            let job = ctx.api.get_job(&id).await?;
            let spinner = spinner(ctx.json);
            let job = ctx
                .api
                .wait(job, Instant::now(), ctx.timeout, |s| {
                    spinner.set_message(s.to_owned())
                })
                .await;
            spinner.finish_and_clear();
            let job = job?;
            client::require_succeeded(&job)?;
            let outputs = match &output {
                Some(dest) => download_all(&ctx.api, &job, dest).await?,
                None => Vec::new(),
            };
            if ctx.json {
                println!("{}", json!({"outputs": outputs, "job": job}));
            } else {
                println!("{}", job_line(&job));
                for p in outputs {
                    println!("wrote {}", p.display());
                }
            }
            Ok(())
        }
        JobsCommand::Cancel { id } => {
            let job = ctx.api.cancel_job(&id).await?;
            if ctx.json {
                println!("{job}");
            } else {
                println!("{}", job_line(&job));
            }
            Ok(())
        }
    }
}

/// `{id}  {status}  {operation}  {created_at}  {engine or error code}`.
fn job_line(job: &Value) -> String {
    let detail = job["error"]["code"]
        .as_str()
        .or_else(|| job["result"]["engine"].as_str())
        .unwrap_or("");
    format!(
        "{}  {:<10}  {:<26}  {}  {detail}",
        job["id"].as_str().unwrap_or("?"),
        job["status"].as_str().unwrap_or("?"),
        job["operation"].as_str().unwrap_or("?"),
        job["created_at"].as_str().unwrap_or("?"),
    )
    .trim_end()
    .to_owned()
}

fn print_job(job: &Value, json: bool) {
    if json {
        println!("{job}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(job).unwrap_or_else(|_| job.to_string())
        );
    }
}

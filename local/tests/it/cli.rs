//! The `imagejobs` CLI (crate `cli/`) run as a user runs it: the built binary as a child
//! process against the whole local stack (emulator, API, processor, the real segmenter with the
//! `plain-background` engine), configured through `IMAGEJOBS_URL` / `IMAGEJOBS_API_KEY`.
//!
//! The binary is another package's, which `CARGO_BIN_EXE_*` does not cover, so the first test
//! to need it runs `cargo build -p imagejobs-cli` into this test binary's own target directory
//! (a no-op when it is fresh).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use serde_json::Value;

use crate::common::{TestEnv, start_segmenter, tempdir};
use imagejobs_local::emulator::workspace_root;
use imagejobs_local::inspect::alpha_stats;

/// `target/{profile}/imagejobs`, built once per test process.
fn cli_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // This test binary is `target/{profile}/deps/it-{hash}`.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .args([
                "build",
                "-p",
                "imagejobs-cli",
                "--bin",
                "imagejobs",
                "--target-dir",
            ])
            .arg(target_dir)
            .current_dir(workspace_root());
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cargo build -p imagejobs-cli failed");
        let bin = profile_dir.join("imagejobs");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// The stack, an API key for `owner`, and a scratch folder.
struct Setup {
    env: TestEnv,
    _stack: imagejobs_local::runner::Stack,
    _segmenter_dir: tempdir::Dir,
    base: String,
    key: String,
    dir: tempdir::Dir,
}

impl Setup {
    async fn new(owner: &str) -> Self {
        let mut env = TestEnv::new().await;
        let (segmenter, segmenter_dir) = start_segmenter().await;
        let stack = env.start_stack(&segmenter).await;
        let base = stack.api_url();
        let key = env.api_key_with(owner, "jobs:read,jobs:write").await;
        Self {
            env,
            _stack: stack,
            _segmenter_dir: segmenter_dir,
            base,
            key,
            dir: tempdir::Dir::new(),
        }
    }

    /// Runs `imagejobs ARGS` with this stack's URL and key in the environment.
    async fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_key(&self.key, args).await
    }

    async fn cli_with_key(&self, key: &str, args: &[&str]) -> Output {
        tokio::process::Command::new(cli_binary())
            .args(args)
            .env("IMAGEJOBS_URL", &self.base)
            .env("IMAGEJOBS_API_KEY", key)
            .env_remove("IMAGEJOBS_UPLOAD_THRESHOLD")
            .current_dir(self.dir.path())
            .output()
            .await
            .expect("the CLI runs")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn asset(name: &str) -> String {
    workspace_root()
        .join("assets")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `--json` lines of stdout.
fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts a cutout: a PNG of `size` with an alpha channel whose mask removes a real part of
/// the image and keeps a real part of it.
fn assert_cutout(path: &Path, size: (u32, u32)) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        path.display()
    );
    let stats = alpha_stats(&bytes).unwrap();
    assert!(stats.has_alpha, "{}: {stats:?}", path.display());
    assert_eq!((stats.width, stats.height), size, "{}", path.display());
    assert!(stats.transparent > 0.05, "background removed: {stats:?}");
    assert!(stats.opaque > 0.01, "subject kept: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_photo_becomes_a_cutout() {
    let s = Setup::new("cli-one").await;
    let out = s
        .cli(&["remove", &asset("sample-rocket.jpg"), "-o", "rocket.png"])
        .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("→ rocket.png"), "{stdout}");
    assert!(
        stdout.contains("plain-background"),
        "the engine is shown: {stdout}"
    );
    assert_cutout(&s.path("rocket.png"), (640, 427));
    let cutout = image::open(s.path("rocket.png")).unwrap().to_rgba8();
    assert_eq!(
        cutout.get_pixel(10, 10).0[3],
        0,
        "the sky in the corner is removed"
    );
    assert_eq!(
        file_names(s.dir.path()),
        ["rocket.png"],
        "no temporary file left"
    );

    // The job is on the server, and `jobs list|get` read it back.
    let list = s.cli(&["jobs", "list", "--json"]).await;
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    let page = &json_lines(&list)[0];
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{page}");
    assert_eq!(jobs[0]["status"], "succeeded");
    let id = jobs[0]["id"].as_str().unwrap();
    let get = s.cli(&["--json", "jobs", "get", id]).await;
    assert_eq!(get.status.code(), Some(0), "{}", text(&get.stderr));
    let job = &json_lines(&get)[0];
    assert_eq!(job["id"], id);
    assert_eq!(job["result"]["engine"], "plain-background");
    let human = s.cli(&["jobs", "list"]).await;
    let listed = text(&human.stdout);
    assert!(
        listed.contains(id) && listed.contains("succeeded"),
        "{listed}"
    );

    // `jobs wait` on a finished job downloads it again; a finished job cannot be canceled.
    let wait = s.cli(&["jobs", "wait", id, "-o", "again.png"]).await;
    assert_eq!(wait.status.code(), Some(0), "{}", text(&wait.stderr));
    assert_eq!(
        std::fs::read(s.path("again.png")).unwrap(),
        std::fs::read(s.path("rocket.png")).unwrap()
    );
    let cancel = s.cli(&["jobs", "cancel", id]).await;
    assert_eq!(cancel.status.code(), Some(1));
    assert!(
        text(&cancel.stderr).contains("(conflict:"),
        "{}",
        text(&cancel.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_three_gives_three_cutouts() {
    let s = Setup::new("cli-folder").await;
    let photos = s.path("photos");
    std::fs::create_dir(&photos).unwrap();
    // Three real photos the weightless `plain-background` engine can cut out: the rocket, and
    // the rocket mirrored and at half size (the portrait's cluttered border needs a neural model).
    let rocket = image::open(asset("sample-rocket.jpg")).unwrap();
    std::fs::copy(asset("sample-rocket.jpg"), photos.join("rocket.jpg")).unwrap();
    rocket.fliph().save(photos.join("mirrored.png")).unwrap();
    rocket
        .resize(320, 320, image::imageops::FilterType::Triangle)
        .save(photos.join("small-rocket.jpg"))
        .unwrap();
    std::fs::write(photos.join("notes.txt"), "not an image").unwrap();

    let out = s
        .cli(&["remove", "photos", "-o", "cutouts/", "--concurrency", "2"])
        .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    for n in 1..=3 {
        assert!(
            stdout.contains(&format!("[{n}/3] ")),
            "progress {n}/3: {stdout}"
        );
    }
    assert!(stderr.contains("3 of 3 done"), "{stderr}");
    assert_eq!(
        file_names(&s.path("cutouts")),
        ["mirrored.png", "rocket.png", "small-rocket.png"]
    );
    assert_cutout(&s.path("cutouts/rocket.png"), (640, 427));
    assert_cutout(&s.path("cutouts/small-rocket.png"), (320, 214));
    assert_cutout(&s.path("cutouts/mirrored.png"), (640, 427));
    let mirrored = image::open(s.path("cutouts/mirrored.png"))
        .unwrap()
        .to_rgba8();
    let original = image::open(s.path("cutouts/rocket.png"))
        .unwrap()
        .to_rgba8();
    let differing = original
        .enumerate_pixels()
        .filter(|(x, y, p)| p.0[3].abs_diff(mirrored.get_pixel(639 - x, *y).0[3]) > 32)
        .count();
    assert!(
        differing < 640 * 427 / 100,
        "the mirrored photo's mask is the original's, mirrored ({differing} pixels differ)"
    );
    let jobs = s.env.table_items().await;
    assert_eq!(jobs, 3, "one job per image, the text file skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_the_sync_limit_go_through_uploads() {
    let s = Setup::new("cli-large").await;
    // A 1280×854 PNG of the rocket (≈ 1.3 MB) is over a 400 KB threshold, the JPEG (112 KB)
    // under it.
    image::open(asset("sample-rocket.jpg"))
        .unwrap()
        .resize(1280, 1280, image::imageops::FilterType::Triangle)
        .save(s.path("big-rocket.png"))
        .unwrap();
    let big_bytes = std::fs::metadata(s.path("big-rocket.png")).unwrap().len();
    assert!(big_bytes > 400_000, "{big_bytes}");
    let out = s
        .cli(&[
            "remove",
            "big-rocket.png",
            &asset("sample-rocket.jpg"),
            "-o",
            "out",
            "--upload-threshold",
            "400000",
            "--json",
            "--concurrency",
            "1",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let line_for = |name: &str| {
        lines
            .iter()
            .find(|l| l["input"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} in {lines:?}"))
    };
    let big = line_for("big-rocket.png");
    assert_eq!(big["uploaded"], true, "{big}");
    let input = &big["job"]["inputs"]["image"];
    assert!(
        input["key"]
            .as_str()
            .unwrap()
            .starts_with("uploads/cli-large/"),
        "the job read the presigned upload: {input}"
    );
    assert_eq!(input["source"], "s3");
    assert_eq!(input["bytes"], big_bytes);
    let small = line_for("sample-rocket.jpg");
    assert_eq!(small["uploaded"], false, "{small}");
    assert!(
        !small["job"]["inputs"]["image"]["key"]
            .as_str()
            .unwrap()
            .starts_with("uploads/"),
        "{small}"
    );
    assert_cutout(&s.path("out/big-rocket.png"), (1280, 854));
    assert_cutout(&s.path("out/sample-rocket.png"), (640, 427));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_exit_1_with_their_code() {
    let s = Setup::new("cli-errors").await;
    let rocket = asset("sample-rocket.jpg");

    let bad_key = s
        .cli_with_key(
            "ij_live_000000000000000000000000000000000000000000000bad",
            &["remove", &rocket, "-o", "x.png"],
        )
        .await;
    let stderr = text(&bad_key.stderr);
    assert_eq!(bad_key.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("The API key is not recognised"), "{stderr}");
    assert!(stderr.contains("(invalid_api_key"), "{stderr}");

    let bad_model = s
        .cli(&[
            "remove",
            &rocket,
            "-o",
            "x.png",
            "--model",
            "no-such-model",
            "--json",
        ])
        .await;
    assert_eq!(
        bad_model.status.code(),
        Some(1),
        "{}",
        text(&bad_model.stderr)
    );
    let error = &json_lines(&bad_model)[0]["error"];
    assert_eq!(error["code"], "unknown_model", "{error}");
    assert_eq!(error["status"], 400);
    assert!(
        error["message"].as_str().unwrap().contains("no-such-model"),
        "the API's message is kept: {error}"
    );

    // JPEG without a background colour: the API's validation, in words.
    let jpeg = s.cli(&["remove", &rocket, "-o", "x.jpg"]).await;
    assert_eq!(jpeg.status.code(), Some(1));
    assert!(
        text(&jpeg.stderr).contains("(invalid_params"),
        "{}",
        text(&jpeg.stderr)
    );

    // A job that fails in the pipeline: the portrait's cluttered border defeats the
    // weightless engine, and the job's own code is shown.
    let failed = s
        .cli(&["remove", &asset("portrait-astronaut.png"), "-o", "x.png"])
        .await;
    let stderr = text(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed:") && stderr.contains("(no_plain_background"),
        "{stderr}"
    );

    let unknown = s.cli(&["jobs", "get", "01J00000000000000000000000"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("(job_not_found"),
        "{}",
        text(&unknown.stderr)
    );

    // Usage errors are 2, before anything is sent.
    let no_key = s.cli_with_key("", &["remove", &rocket]).await;
    assert_eq!(no_key.status.code(), Some(2), "{}", text(&no_key.stderr));
    let missing = s.cli(&["remove", "missing.jpg"]).await;
    assert_eq!(missing.status.code(), Some(2));

    assert!(
        file_names(s.dir.path()).is_empty(),
        "no output of a refused job"
    );
    assert_eq!(
        s.env.table_items().await,
        1,
        "only the job that failed was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_commands_send_their_fields() {
    // No Stability or fal.ai key in the test stack: each job is accepted (its fields passed the
    // API's validation), recorded with its parameters and inputs, then fails
    // `provider_not_configured`, which the CLI reports with exit 1.
    let s = Setup::new("cli-providers").await;
    let rocket = asset("sample-rocket.jpg");
    let portrait = asset("portrait-astronaut.png");
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "relight",
                &rocket,
                "--background-prompt",
                "a sunlit beach",
                "--light-direction",
                "above",
                "--light-strength",
                "0.7",
                "--seed",
                "42",
                "-o",
                "relit.png",
            ],
            "replace_background_relight",
        ),
        (
            &[
                "edit",
                &rocket,
                "-p",
                "make it night",
                "-r",
                &portrait,
                "-n",
                "2",
                "-o",
                "e.png",
            ],
            "edit",
        ),
        (
            &[
                "generate",
                "-p",
                "a watercolour fox",
                "--image-size",
                "1024x768",
                "-o",
                "g.png",
            ],
            "generate",
        ),
    ];
    for (args, operation) in cases {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = s.cli(&all).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let error = &json_lines(&out)[0]["error"];
        assert_eq!(
            error["code"], "provider_not_configured",
            "{operation}: {error}"
        );
        let id = error["job_id"].as_str().unwrap();
        let get = s.cli(&["--json", "jobs", "get", id]).await;
        let job = &json_lines(&get)[0];
        assert_eq!(job["operation"], operation, "{job}");
        match operation {
            "replace_background_relight" => {
                assert_eq!(job["params"]["background_prompt"], "a sunlit beach");
                assert_eq!(job["params"]["light_source_direction"], "above");
                assert_eq!(job["params"]["light_source_strength"], 0.7);
                assert_eq!(job["params"]["seed"], 42);
            }
            "edit" => {
                assert_eq!(job["params"]["prompt"], "make it night");
                assert_eq!(job["params"]["num_images"], 2);
                assert_eq!(job["inputs"]["reference_1"]["width"], 512, "{job}");
            }
            _ => {
                assert_eq!(job["params"]["prompt"], "a watercolour fox");
                assert_eq!(job["params"]["mode"], "text");
                assert_eq!(
                    job["params"]["image_size"],
                    serde_json::json!({"width": 1024, "height": 768})
                );
            }
        }
    }
    assert!(
        file_names(s.dir.path()).is_empty(),
        "no output of a failed job"
    );
}

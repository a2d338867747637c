//! The chaos suite (issue #13): a mixed load on the real local stack on moto (the API and an
//! in-process processor, plus 2 `imagejobs-local worker` processes SIGKILLed every 10–30 s and
//! restarted), with seeded faults everywhere: the decorators of `shared::faults` on every
//! job-path port of every process, a fake segmenter that answers 5xx, 429 and hangs, and
//! wiremock Stability and fal.ai (the contracts of `relight.rs` and `fal.rs`) that answer 429,
//! 5xx and accept-then-hang. At the end it checks the invariants and prints a table.
//!
//! The CI variant runs [`CI_JOBS`] jobs; `CHAOS_JOBS`, `CHAOS_OWNERS` and
//! `CHAOS_JOBS_PER_MINUTE` make it a soak (`scripts/chaos-soak.sh`), and `CHAOS_SEED` replays a
//! run (the default seed is fixed, so CI's inputs are the same every run; thread scheduling
//! still decides where each fault lands).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::common::stability::multipart_parts;
use crate::common::{
    TestEnv, fal as fal_contract, retry_after, spawn_local, stability as stability_contract,
};
use shared::core::{JobStore, PendingJobs};
use shared::faults::{ABORT_LINE, AbortPlan, AbortPoint, FaultKind, FaultPlan, Faults};
use shared::job::{Job, JobStatus, OwnerId};

/// Jobs of the CI variant (the issue asks for ≥ 300 within 6 minutes on 2 cores).
const CI_JOBS: usize = 300;
/// Owners of the CI variant.
const CI_OWNERS: usize = 3;
/// The seed CI uses unless `CHAOS_SEED` names another.
const DEFAULT_SEED: u64 = 1313;
/// Rate of errors and commit-then-errors per eligible port call (0.5 %). Each one that fails a record
/// costs its job a lease (30 s) and a sweep before the retry, so a run that is to end within
/// its budget keeps this low; there are thousands of port calls, so each kind still fires
/// dozens of times.
const PORT_FAULT_RATE: f64 = 0.005;
/// Rate of transaction conflicts: only creates and terminal writes are transactions, a few
/// hundred a CI run, so at 2 % one run in a handful drew fewer than the 5 that make a run
/// count (a CI run of 2026-12-06 fired 4 and was void).
const CONFLICT_RATE: f64 = 0.03;
/// Each of the fakes' own faults (5xx, 429, hang / accept-then-hang) is dealt this many times
/// per 100 jobs, shuffled (seeded) into the first requests, a deck per fake family (the
/// segmenter; the three provider endpoints together). A deck makes "each kind fired ≥ 5
/// times" hold by construction instead of by luck, and leaves the drain's retries unfaulted,
/// so a run ends within its budget (each failed record costs its job a lease).
const FAKE_FAULTS_PER_100_JOBS: usize = 3;
/// Rate of duplicate sends: the queue sees fewer calls than the tables, so more per call.
const DUPLICATE_RATE: f64 = 0.05;
/// How long a job may wait on a provider. The fakes finish at once, but a poll whose record
/// failed (an injected S3 or DynamoDB fault) is replaced by the sweeper only a minute later,
/// so this leaves room for two such failures; a poll chain lost for good would end its job
/// `provider_timeout` within the run's budget and show.
const PROVIDER_DEADLINE_SECONDS: u64 = 180;
/// The rate the load is offered at unless `CHAOS_JOBS_PER_MINUTE` names another. The CI
/// variant is a burst (its 300 jobs in 75 s outrun a 2-core machine; the in-flight quota,
/// [`MAX_IN_FLIGHT_PER_OWNER`], makes its clients wait instead of the queue); a soak
/// offers what the machine sustains (`scripts/chaos-soak.sh`), since with a backlog that grows
/// for its whole length the queue wait alone, not recovery, would set every latency.
const DEFAULT_JOBS_PER_MINUTE: f64 = 240.0;
/// Queued + processing jobs each owner may have: the API's own in-flight quota
/// (`MAX_JOBS_IN_FLIGHT`), which holds the backlog to what the machine drains in seconds. The
/// offered load outruns a 2-core machine (moto, one Python core, does ~80–90 jobs/min here);
/// with no quota the queue grew to minutes, a crashed job's `run` waited behind all of it, and
/// the recovery bound measured that queue instead of recovery (CI runs of 2026-12-07: job
/// latency p50 32–45 s, the slowest recoveries 122–215 s, half of each in the queue). Clients
/// retry the 429 `too_many_jobs_in_flight` as a real one would.
const MAX_IN_FLIGHT_PER_OWNER: u32 = 10;
/// The longest a client waits before asking again after a 429: the API's `Retry-After` for the
/// in-flight quota (10 s) is a conservative hint, and a freed slot should be taken in seconds.
const QUOTA_RETRY_CAP: Duration = Duration::from_secs(2);
/// The bound: a job interrupted by a crash finishes within 2 minutes of it.
const RECOVERY_LIMIT_SECONDS: f64 = 120.0;
/// Client-side timeouts the workers get, so a hang costs seconds, not the 40 s defaults.
const CALL_TIMEOUT_SECONDS: u64 = 3;
/// How long a hanging fake answers: past [`CALL_TIMEOUT_SECONDS`].
const HANG: Duration = Duration::from_secs(5);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A unique small PNG per job: its SHA-256 is how the fakes attribute a request to a job.
fn job_png(index: usize) -> Vec<u8> {
    // 72×64: Stability needs each side ≥ 64 px.
    let img = image::RgbImage::from_fn(72, 64, |x, y| {
        image::Rgb([
            (index % 251) as u8,
            (index / 251) as u8,
            ((x * 3 + y * 5) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A cutout with half its pixels kept (what the segmenter and Stability answer).
fn cutout_png() -> Vec<u8> {
    let img = image::RgbaImage::from_fn(80, 64, |x, _| {
        image::Rgba([9, 9, 9, if x < 40 { 255 } else { 0 }])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a fake did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Ok,
    Status5xx,
    TooMany,
    Hang,
}

/// The fakes' seeded fault decks, with a per-(fake, tag) log of what they answered.
struct FakeLog {
    /// Per family (`segmenter`, `provider`): the answers still to deal, last first.
    decks: Mutex<HashMap<&'static str, Vec<Answer>>>,
    /// `(fake, job tag, answer)` in arrival order.
    log: Mutex<Vec<(&'static str, String, Answer)>>,
}

impl FakeLog {
    /// Decks for `jobs` jobs, shuffled by `rng`.
    fn new(jobs: usize, rng: &mut StdRng) -> Self {
        let per_kind = (jobs * FAKE_FAULTS_PER_100_JOBS).div_ceil(100).max(6);
        let mut decks = HashMap::new();
        for family in ["segmenter", "provider"] {
            // The faults among the first ~jobs/3 requests of the family.
            let len = (jobs / 3).max(4 * per_kind);
            let mut deck = vec![Answer::Ok; len - 3 * per_kind];
            for kind in [Answer::Status5xx, Answer::TooMany, Answer::Hang] {
                deck.extend(std::iter::repeat_n(kind, per_kind));
            }
            use rand::seq::SliceRandom;
            deck.shuffle(rng);
            decks.insert(family, deck);
        }
        Self {
            decks: Mutex::new(decks),
            log: Mutex::new(Vec::new()),
        }
    }

    fn draw(&self, fake: &'static str, tag: String) -> Answer {
        let family = if fake == "segmenter" {
            "segmenter"
        } else {
            "provider"
        };
        let answer = self
            .decks
            .lock()
            .unwrap()
            .get_mut(family)
            .and_then(Vec::pop)
            .unwrap_or(Answer::Ok);
        self.log.lock().unwrap().push((fake, tag, answer));
        answer
    }

    fn count(&self, fake: &str, answer: Answer) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|e| e.0 == fake && e.2 == answer).count()
    }

    /// Requests per job tag that reached `fake` (a hang counts: the provider got it).
    fn per_tag(&self, fake: &str) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for (f, tag, answer) in self.log.lock().unwrap().iter() {
            // A 429 or 5xx is a refusal (nothing accepted, not billed); OK and hang are
            // accepted requests.
            if *f == fake && matches!(answer, Answer::Ok | Answer::Hang) {
                *out.entry(tag.clone()).or_default() += 1;
            }
        }
        out
    }
}

/// Answers `answer` the way `fake` does (the error bodies of each contract).
fn refusal(answer: Answer, ok: ResponseTemplate) -> ResponseTemplate {
    match answer {
        Answer::Ok => ok,
        Answer::Hang => ok.set_delay(HANG),
        Answer::TooMany => ResponseTemplate::new(429)
            .insert_header("retry-after", "1")
            .set_body_json(json!({"name": "rate_limit_exceeded", "errors": ["slow down"]})),
        Answer::Status5xx => ResponseTemplate::new(500)
            .set_body_json(json!({"name": "internal_error", "errors": ["boom"]})),
    }
}

/// The segmenter's `POST /invocations` contract (containers/segmenter/README.md).
struct FakeSegmenter(Arc<FakeLog>);

impl Respond for FakeSegmenter {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let answer = self.0.draw("segmenter", sha(&req.body));
        match answer {
            Answer::TooMany => ResponseTemplate::new(429)
                .set_body_json(json!({"error": {"code": "overloaded", "message": "queue full"}})),
            Answer::Status5xx => ResponseTemplate::new(500)
                .set_body_json(json!({"error": {"code": "internal", "message": "boom"}})),
            _ => {
                let ok = ResponseTemplate::new(200)
                    .insert_header("content-type", "image/png")
                    .insert_header("x-image-width", "80")
                    .insert_header("x-image-height", "64")
                    .insert_header("x-model", "plain-background")
                    .insert_header("x-foreground-fraction", "0.5000")
                    .set_body_bytes(cutout_png());
                if answer == Answer::Hang {
                    ok.set_delay(HANG)
                } else {
                    ok
                }
            }
        }
    }
}

/// Stability's relight submit (§1.3): the generation id is the subject image's SHA-256 (64 hex
/// characters, as the contract's ids are), so polls find their job's result.
struct StabilitySubmit(Arc<FakeLog>);

impl Respond for StabilitySubmit {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let parts = multipart_parts(req);
        let subject = parts.iter().find(|p| p.0 == "subject_image").unwrap();
        let id = sha(&subject.3);
        let answer = self.0.draw("stability.relight", id.clone());
        refusal(
            answer,
            ResponseTemplate::new(200).set_body_json(json!({ "id": id })),
        )
    }
}

/// Stability's synchronous remove-background (§1.5).
struct StabilityRemove(Arc<FakeLog>);

impl Respond for StabilityRemove {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let parts = multipart_parts(req);
        let image = parts.iter().find(|p| p.0 == "image").unwrap();
        let answer = self.0.draw("stability.remove", sha(&image.3));
        refusal(
            answer,
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .insert_header("finish-reason", "SUCCESS")
                .insert_header("seed", "0")
                .set_body_bytes(cutout_png()),
        )
    }
}

/// fal.ai's queue submit (§2.3): the request id is derived from the prompt, which names the
/// job, so a second submit for one job shows in the log.
struct FalSubmit {
    log: Arc<FakeLog>,
    base: String,
}

impl Respond for FalSubmit {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let prompt = body["prompt"].as_str().unwrap_or_default().to_owned();
        let h = sha(prompt.as_bytes());
        let id = format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        let answer = self.log.draw("fal.submit", prompt);
        let base = format!("{}/fal-ai/bytedance/requests/{id}", self.base);
        refusal(
            answer,
            ResponseTemplate::new(200).set_body_json(json!({
                "request_id": id, "response_url": base, "status_url": format!("{base}/status"),
                "cancel_url": format!("{base}/cancel"), "status": "IN_QUEUE", "queue_position": 0
            })),
        )
    }
}

/// An `imagejobs-local` process of the run: a `worker`, or the `serve` process that takes part
/// of the load's creates. Its last "fault counts" line is kept, since a SIGKILL or an abort
/// leaves no chance to report at exit, and so is its abort line (the planned point it died at).
struct Worker {
    child: Child,
    faults: Arc<Mutex<BTreeMap<String, u64>>>,
    aborted: Arc<Mutex<Option<AbortPoint>>>,
    log: PathBuf,
    /// The incarnation's targeted abort, if it has one.
    plan: Option<AbortPlan>,
}

fn parse_counts(line: &str) -> Option<BTreeMap<String, u64>> {
    let at = line.find("fault counts")?;
    let mut out = BTreeMap::new();
    for token in line[at..].split_whitespace() {
        let token = token.strip_prefix("faults=").unwrap_or(token);
        if let Some((k, v)) = token.split_once('=')
            && let Ok(n) = v.parse::<u64>()
        {
            out.insert(k.to_owned(), n);
        }
    }
    Some(out)
}

/// The point named by an [`ABORT_LINE`] (`... point=s3_put site=blobs.put call=7`).
fn parse_abort(line: &str) -> Option<AbortPoint> {
    let rest = &line[line.find(ABORT_LINE)? + ABORT_LINE.len()..];
    let name = rest
        .split_whitespace()
        .find_map(|t| t.strip_prefix("point="))?;
    AbortPoint::ALL.into_iter().find(|p| p.name() == name)
}

impl Worker {
    fn start(
        env: &TestEnv,
        role: Role,
        plan: Option<AbortPlan>,
        vars: &[(String, String)],
        log: PathBuf,
    ) -> Self {
        let faults = Arc::new(Mutex::new(BTreeMap::new()));
        let aborted = Arc::new(Mutex::new(None));
        // Each incarnation's log is kept for the post-mortem of a failed run.
        let file = Mutex::new(std::fs::File::create(&log).unwrap());
        let (counts, abort) = (faults.clone(), aborted.clone());
        let subcommand = match role {
            Role::Worker => "worker",
            Role::Api => "serve",
        };
        let child = spawn_local(env, subcommand, vars, move |line| {
            use std::io::Write;
            let _ = writeln!(file.lock().unwrap(), "{line}");
            if let Some(c) = parse_counts(line) {
                *counts.lock().unwrap() = c;
            }
            if let Some(point) = parse_abort(line) {
                *abort.lock().unwrap() = Some(point);
            }
        });
        Self {
            child,
            faults,
            aborted,
            log,
            plan,
        }
    }

    /// SIGKILL (by this child's own PID): no shutdown, leases kept, messages left invisible.
    fn kill(mut self) -> BTreeMap<String, u64> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.faults.lock().unwrap().clone()
    }

    /// How the process ended, if it did: `Ok(point)` for its planned abort (its abort line,
    /// then SIGABRT), `Err` for anything else (a crash the run did not plan: a failure).
    async fn ended(&mut self) -> Option<Result<AbortPoint, String>> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.try_wait().unwrap()?;
        // The pipe threads may still be reading the last lines.
        let mut point = None;
        for _ in 0..20 {
            point = *self.aborted.lock().unwrap();
            if point.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(match point {
            Some(point) if status.signal() == Some(SIGABRT) => Ok(point),
            _ => Err(format!(
                "a process ended unplanned: {status} (its log: {})",
                self.log.display()
            )),
        })
    }
}

/// SIGABRT's number on Linux, which `std::process::abort` raises.
const SIGABRT: i32 = 6;

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an `imagejobs-local` process of the run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `worker`: queue workers and the sweeper; SIGKILLed now and then, and aborts after a
    /// provider submit, an S3 put or a terminal write.
    Worker,
    /// `serve`: the API that takes the even-numbered keyed creates, with its own queue
    /// workers (batch 1); aborts after a job write.
    Api,
}

/// A crash the run caused: when, what, and the jobs it may have interrupted, with where each
/// stood then (each must end within [`RECOVERY_LIMIT_SECONDS`]): those processing, and after
/// a job write also those queued (the one whose send the crash prevented).
struct Crash {
    at: time::OffsetDateTime,
    what: String,
    interrupted: Vec<(ulid::Ulid, Turn)>,
}

/// Where a job stood at a crash: its claims so far and its due time in the `pending` index
/// (Unix seconds; docs/ARCHITECTURE.md "Recovery"). Every step of a job's recovery changes
/// one of them: a claim or takeover counts an attempt, and each claim, poll turn and sweeper
/// relay moves the due time. So a later crash that finds the job at another turn hit what the
/// recovery from this one had already sent (a replaced poll, a takeover's run message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Turn {
    attempts: u32,
    due: Option<i64>,
}

/// The jobs a crash at this moment may interrupt: `processing` ones, and `queued` ones too
/// when `queued` (a crash after a job write).
async fn interrupted(env: &TestEnv, owners: &[String], queued: bool) -> Vec<(ulid::Ulid, Turn)> {
    let jobs = all_jobs(env, owners).await;
    // Read after the records, so a due time is never older than the status beside it (an
    // older one could pass for a turn the job had not taken yet).
    let due: HashMap<ulid::Ulid, i64> = env
        .aws()
        .jobs
        .due(i64::MAX, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.due))
        .collect();
    jobs.into_iter()
        .filter(|j| j.status == JobStatus::Processing || (queued && j.status == JobStatus::Queued))
        .map(|j| {
            let turn = Turn {
                attempts: j.attempts,
                due: due.get(&j.id).copied(),
            };
            (j.id, turn)
        })
        .collect()
}

/// The lines of the run's process logs that name job `id`, oldest first (at most 60), for a
/// check that failed on it. The in-process stack logs to this test's own output.
fn job_log(logs: &Path, id: ulid::Ulid) -> String {
    let id = id.to_string();
    let mut lines: Vec<(String, String)> = std::fs::read_dir(logs)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&id))
                .map(|l| (l.to_owned(), name.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    // Each line starts with its RFC 3339 time.
    lines.sort();
    lines
        .iter()
        .rev()
        .take(60)
        .rev()
        .map(|(line, file)| format!("  {file}: {line}\n"))
        .collect()
}

/// A process's environment from its role, incarnation and targeted abort.
type ProcessVars<'a> = dyn Fn(Role, u64, Option<AbortPlan>) -> Vec<(String, String)> + 'a;

/// The run's `imagejobs-local` processes, each restarted when it is killed or aborts.
struct Fleet<'a> {
    env: &'a TestEnv,
    logs: PathBuf,
    vars: Box<ProcessVars<'a>>,
    workers: Vec<Worker>,
    api: Option<Worker>,
    incarnation: u64,
    rng: StdRng,
    /// Whether new incarnations get a targeted abort (until the kills stop, so the drain
    /// converges).
    plan_aborts: bool,
    aborts: BTreeMap<AbortPoint, u64>,
    /// The last fault counts of every incarnation that was killed or aborted.
    ended_counts: Vec<BTreeMap<String, u64>>,
}

/// The points a worker aborts at, in turn.
const WORKER_POINTS: [AbortPoint; 3] = [
    AbortPoint::ProviderSubmit,
    AbortPoint::ResultPut,
    AbortPoint::TerminalWrite,
];

impl Fleet<'_> {
    /// The next incarnation's abort: the API's after its 8th–24th create; a worker's, unless
    /// another live worker still has one (so worker aborts come one at a time, beside the
    /// kills), at the point that has fired least so far (ties in turn), after its 2nd–8th
    /// call there.
    fn abort_plan(&mut self, role: Role) -> Option<AbortPlan> {
        if !self.plan_aborts {
            return None;
        }
        Some(match role {
            Role::Api => AbortPlan {
                point: AbortPoint::JobWrite,
                after: self.rng.random_range(8..=24),
            },
            Role::Worker if self.workers.iter().any(|w| w.plan.is_some()) => return None,
            Role::Worker => {
                let turn = self.incarnation as usize % WORKER_POINTS.len();
                let (_, point) = WORKER_POINTS
                    .iter()
                    .enumerate()
                    .min_by_key(|(i, p)| {
                        (
                            self.aborts.get(p).copied().unwrap_or(0),
                            (i + WORKER_POINTS.len() - turn) % WORKER_POINTS.len(),
                        )
                    })
                    .unwrap();
                AbortPlan {
                    point: *point,
                    after: self.rng.random_range(2..=8),
                }
            }
        })
    }

    fn start(&mut self, role: Role) -> Worker {
        let abort = self.abort_plan(role);
        let n = self.incarnation;
        self.incarnation += 1;
        let name = match role {
            Role::Worker => format!("worker-{n}.log"),
            Role::Api => format!("api-{n}.log"),
        };
        Worker::start(
            self.env,
            role,
            abort,
            &(self.vars)(role, n, abort),
            self.logs.join(name),
        )
    }

    /// Restarts every process that ended on its own. A planned abort is counted and returned
    /// as a crash, with the jobs not yet ended; any other end fails the run at once.
    async fn supervise(&mut self, owners: &[String]) -> Vec<Crash> {
        let mut ended: Vec<(Role, AbortPoint, BTreeMap<String, u64>)> = Vec::new();
        let mut i = 0;
        while i < self.workers.len() {
            match self.workers[i].ended().await {
                None => i += 1,
                Some(how) => {
                    let point = how.unwrap_or_else(|e| panic!("{e}"));
                    let gone = self.workers.remove(i);
                    ended.push((Role::Worker, point, gone.faults.lock().unwrap().clone()));
                }
            }
        }
        if let Some(api) = self.api.as_mut()
            && let Some(how) = api.ended().await
        {
            let point = how.unwrap_or_else(|e| panic!("{e}"));
            let counts = api.faults.lock().unwrap().clone();
            self.api = None;
            ended.push((Role::Api, point, counts));
        }
        if ended.is_empty() {
            return Vec::new();
        }
        let at = time::OffsetDateTime::now_utc();
        let queued = ended.iter().any(|(role, ..)| *role == Role::Api);
        let interrupted = interrupted(self.env, owners, queued).await;
        let mut crashes = Vec::new();
        for (role, point, counts) in ended {
            *self.aborts.entry(point).or_default() += 1;
            self.ended_counts.push(counts);
            match role {
                Role::Worker => {
                    let w = self.start(Role::Worker);
                    self.workers.push(w);
                }
                Role::Api => self.api = Some(self.start(Role::Api)),
            }
            crashes.push(Crash {
                at,
                what: format!("{role:?} abort after {}", point.name()),
                interrupted: interrupted.clone(),
            });
        }
        crashes
    }
}

/// What the client knows of one submission.
#[derive(Debug, Clone)]
struct Submitted {
    owner: String,
    key: Option<String>,
    ids: Vec<String>,
}

/// One job of the load: index, operation, owner, Idempotency-Key, POSTed twice at once, and
/// the seconds after its acceptance at which it is canceled.
type Planned = (usize, Op, usize, Option<String>, bool, Option<f64>);

/// Which operation a job runs.
#[derive(Debug, Clone, Copy)]
enum Op {
    Segmenter,
    StabilityRemove,
    Relight,
    Generate,
}

fn request(c: &reqwest::Client, base: &str, op: Op, index: usize) -> reqwest::RequestBuilder {
    let post = c.post(format!("{base}/v1/jobs"));
    let file = |field: &str| {
        Part::bytes(job_png(index))
            .file_name(format!("{field}.png"))
            .mime_str("image/png")
            .unwrap()
    };
    match op {
        Op::Segmenter => post.multipart(Form::new().part("file", file("file"))),
        Op::StabilityRemove => post.multipart(
            Form::new()
                .part("file", file("file"))
                .text("provider", "stability")
                .text("output_format", "png"),
        ),
        Op::Relight => post.multipart(
            Form::new()
                .text("operation", "replace_background_relight")
                .part("subject_image", file("subject"))
                .text("background_prompt", "a sunlit beach at golden hour")
                .text("output_format", "png"),
        ),
        Op::Generate => post.json(&json!({
            "operation": "generate",
            "params": {"mode": "text", "prompt": format!("chaos job {index}")}
        })),
    }
}

/// How long a client keeps retrying one create: through an API process's restart after its
/// abort, which a loaded 2-core machine takes up to ~25 s to notice and start again (a CI run
/// of 2026-12-07 gave up on 11 creates after 60 tries in ~20 s), and through the in-flight
/// quota's refusals while its owner's earlier jobs drain.
const SUBMIT_PATIENCE: Duration = Duration::from_secs(240);

/// POSTs job `index` until it is accepted, retrying 429, 5xx and refused connections with the
/// same Idempotency-Key as a client should, for up to [`SUBMIT_PATIENCE`]. `None` if it never
/// was (reported, and it fails the run).
async fn submit_one(
    c: &reqwest::Client,
    base: &str,
    op: Op,
    index: usize,
    key: Option<&str>,
) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < SUBMIT_PATIENCE {
        let mut req = request(c, base, op, index);
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let status = resp.status().as_u16();
        let wait_asked = retry_after(&resp);
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            202 | 200 => return body["id"].as_str().map(str::to_owned),
            429 => {
                let wait = wait_asked.unwrap_or(QUOTA_RETRY_CAP).min(QUOTA_RETRY_CAP);
                tokio::time::sleep(wait).await
            }
            500..=599 => tokio::time::sleep(Duration::from_millis(300)).await,
            // The same key's twin is still being created: ask again (never for
            // `idempotency_key_reused`, which would be a bug here).
            409 if body["error"]["code"] == "conflict" => {
                tokio::time::sleep(Duration::from_millis(300)).await
            }
            _ => panic!("job {index} ({op:?}) refused: {status} {body}"),
        }
    }
    None
}

/// Every job item in the table (the accepted ones and any a lost response left behind).
async fn all_jobs(env: &TestEnv, owners: &[String]) -> Vec<Job> {
    let jobs = env.aws().jobs;
    let mut out = Vec::new();
    for owner in owners {
        let owner = OwnerId::parse(owner).unwrap();
        let mut cursor = None;
        loop {
            let page = jobs
                .list(
                    &owner,
                    &shared::core::ListQuery {
                        limit: 100,
                        cursor: cursor.clone(),
                        status: None,
                    },
                )
                .await
                .unwrap();
            out.extend(page.jobs);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_ci_mixed_load_with_faults_and_kills_keeps_every_invariant() {
    run(
        env_or("CHAOS_JOBS", CI_JOBS),
        env_or("CHAOS_OWNERS", CI_OWNERS),
    )
    .await;
}

async fn run(jobs: usize, owners: usize) {
    let started = Instant::now();
    let seed: u64 = env_or("CHAOS_SEED", DEFAULT_SEED);
    eprintln!("chaos: seed {seed} (replay with CHAOS_SEED={seed}), {jobs} jobs, {owners} owners");
    let mut rng = StdRng::seed_from_u64(seed);
    let fakes = Arc::new(FakeLog::new(jobs, &mut rng));

    // The fakes, each on its own 127.0.0.1 port.
    let segmenter = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/invocations"))
        .respond_with(FakeSegmenter(fakes.clone()))
        .mount(&segmenter)
        .await;
    let stability = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(stability_contract::SUBMIT_PATH))
        .respond_with(StabilitySubmit(fakes.clone()))
        .mount(&stability)
        .await;
    Mock::given(method("POST"))
        .and(path("/v2beta/stable-image/edit/remove-background"))
        .respond_with(StabilityRemove(fakes.clone()))
        .mount(&stability)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/v2beta/results/[0-9a-f]{64}$"))
        .respond_with(stability_contract::done("SUCCESS"))
        .mount(&stability)
        .await;
    let fal = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/{}", fal_contract::TEXT_MODEL)))
        .respond_with(FalSubmit {
            log: fakes.clone(),
            base: fal.uri(),
        })
        .mount(&fal)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(
            "^/fal-ai/bytedance/requests/[0-9a-f-]{36}/status$",
        ))
        .respond_with(fal_contract::completed())
        .mount(&fal)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex(
            "^/fal-ai/bytedance/requests/[0-9a-f-]{36}/cancel$",
        ))
        .respond_with(
            ResponseTemplate::new(202).set_body_json(json!({"status": "CANCELLATION_REQUESTED"})),
        )
        .mount(&fal)
        .await;
    let output = fal_contract::outputs(&fal, 1).await;
    Mock::given(method("GET"))
        .and(path_regex("^/fal-ai/bytedance/requests/[0-9a-f-]{36}$"))
        .respond_with(output)
        .mount(&fal)
        .await;
    // The owners' webhook receiver: every delivery's `webhook-id` (`msg_{job}_{status}`) and
    // when it came.
    let hooks: Arc<Mutex<Vec<(String, time::OffsetDateTime)>>> = Arc::default();
    let seen = hooks.clone();
    let receiver = crate::common::serve_router(axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                seen.lock()
                    .unwrap()
                    .push((id, time::OffsetDateTime::now_utc()));
                axum::http::StatusCode::OK
            }
        }),
    ))
    .await;
    let hook_url = format!("http://{receiver}/hook");

    // The stack: settings shared by the in-process API/processor and the worker processes.
    let mut env = TestEnv::new().await;
    env.settings.egress.allow_http_urls = true;
    env.settings.egress.allow_private_urls = true;
    env.settings.jobs.max_in_flight = MAX_IN_FLIGHT_PER_OWNER;
    env.settings.jobs.max_per_minute = 10_000;
    env.settings.segmenter.timeout = Duration::from_secs(CALL_TIMEOUT_SECONDS);
    let mut providers = stability_contract::providers(&stability);
    providers.stability_timeout = Duration::from_secs(CALL_TIMEOUT_SECONDS);
    providers.fal_key = Some(fal_contract::KEY.into());
    providers.fal_queue_url = fal.uri();
    providers.fal_timeout = Duration::from_secs(CALL_TIMEOUT_SECONDS);
    providers.poll_delay = Duration::from_secs(1);
    providers.provider_deadline = Duration::from_secs(PROVIDER_DEADLINE_SECONDS);
    env.settings.providers = providers;
    let port_faults = |seed: u64| {
        let mut plan = FaultPlan::uniform(seed, PORT_FAULT_RATE);
        // Twice the error rate: lost answers land on writes only.
        plan.rates[1] = 2.0 * PORT_FAULT_RATE;
        plan.rates[2] = CONFLICT_RATE;
        plan.rates[3] = DUPLICATE_RATE;
        plan
    };
    // The second API's port, fixed for all its incarnations (clients retry through restarts).
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (segmenter_uri, stability_uri, fal_uri) = (segmenter.uri(), stability.uri(), fal.uri());
    let process_vars =
        move |role: Role, incarnation: u64, abort: Option<AbortPlan>| -> Vec<(String, String)> {
            let mut plan = port_faults(seed.wrapping_add(incarnation));
            plan.abort = abort;
            let batch = match role {
                Role::Worker => "4",
                Role::Api => "1",
            };
            let api: &[(&str, String)] = match role {
                Role::Worker => &[],
                Role::Api => &[
                    ("API_ADDR", format!("127.0.0.1:{api_port}")),
                    ("MAX_JOBS_IN_FLIGHT", MAX_IN_FLIGHT_PER_OWNER.to_string()),
                    ("MAX_JOBS_PER_MINUTE", "10000".into()),
                ],
            };
            [
                ("SEGMENTER_URL", segmenter_uri.clone()),
                (
                    "SEGMENTER_TIMEOUT_SECONDS",
                    CALL_TIMEOUT_SECONDS.to_string(),
                ),
                ("DEFAULT_MODEL", "plain-background".into()),
                ("STABILITY_API_KEY", stability_contract::KEY.into()),
                ("STABILITY_BASE_URL", stability_uri.clone()),
                (
                    "STABILITY_TIMEOUT_SECONDS",
                    CALL_TIMEOUT_SECONDS.to_string(),
                ),
                ("FAL_KEY", fal_contract::KEY.into()),
                ("FAL_QUEUE_URL", fal_uri.clone()),
                ("FAL_TIMEOUT_SECONDS", CALL_TIMEOUT_SECONDS.to_string()),
                ("POLL_DELAY_SECONDS", "1".into()),
                (
                    "PROVIDER_DEADLINE_SECONDS",
                    PROVIDER_DEADLINE_SECONDS.to_string(),
                ),
                ("ALLOW_HTTP_URLS", "true".into()),
                ("ALLOW_PRIVATE_URLS", "true".into()),
                ("PROCESSOR_BATCH_SIZE", batch.into()),
                ("FAULTS", plan.to_string()),
            ]
            .into_iter()
            .chain(api.iter().cloned())
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
        };
    let api_faults = Arc::new(Faults::new(port_faults(seed)));
    let stack = env
        .start_stack_with(
            &segmenter.uri(),
            Some(Duration::from_secs(5)),
            4,
            Some(api_faults.clone()),
        )
        .await;
    let base = stack.api_url();
    let logs = std::env::temp_dir().join(format!("imagejobs-chaos-{seed}-{}", env.suffix));
    std::fs::create_dir_all(&logs).unwrap();
    eprintln!("chaos: worker logs in {}", logs.display());
    let mut fleet = Fleet {
        env: &env,
        logs: logs.clone(),
        vars: Box::new(process_vars),
        workers: Vec::new(),
        api: None,
        incarnation: 1,
        rng: StdRng::seed_from_u64(seed ^ 0xab07),
        plan_aborts: true,
        aborts: BTreeMap::new(),
        ended_counts: Vec::new(),
    };
    for _ in 0..2 {
        let w = fleet.start(Role::Worker);
        fleet.workers.push(w);
    }
    fleet.api = Some(fleet.start(Role::Api));
    let api_base = format!("http://127.0.0.1:{api_port}");

    // Owners, each with a default webhook.
    let owner_names: Vec<String> = (0..owners).map(|i| format!("chaos-{i}")).collect();
    let mut clients = Vec::new();
    for owner in &owner_names {
        let c = env.client(owner).await;
        let resp = c
            .put(format!("{base}/v1/webhooks"))
            .json(&json!({"default_url": hook_url}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        clients.push(c);
    }

    // Quota sampler: every owner's in-flight counter once a second.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let min_in_flight = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sampler = {
        let (sampling, min_in_flight) = (sampling.clone(), min_in_flight.clone());
        let ddb = env.dynamodb();
        let table = env.settings.resources.table.clone();
        let owners = owner_names.clone();
        tokio::spawn(async move {
            let mut samples = 0u64;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                for owner in &owners {
                    use aws_sdk_dynamodb::types::AttributeValue as V;
                    let Ok(out) = ddb
                        .get_item()
                        .table_name(&table)
                        .key("pk", V::S(format!("OWNER#{owner}")))
                        .key("sk", V::S("QUOTA#in-flight".into()))
                        .consistent_read(true)
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let n: i64 = out
                        .item
                        .and_then(|i| i.get("count").and_then(|v| v.as_n().ok()).cloned())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    min_in_flight.fetch_min(n, std::sync::atomic::Ordering::Relaxed);
                }
                samples += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            samples
        })
    };

    // The load: spread over `submit_window`, 8 clients at a time.
    let per_minute: f64 = env_or("CHAOS_JOBS_PER_MINUTE", DEFAULT_JOBS_PER_MINUTE);
    let submit_window = Duration::from_secs_f64((jobs as f64 * 60.0 / per_minute).max(60.0));
    eprintln!(
        "chaos: load offered at {per_minute} jobs/min over {:.0} s",
        submit_window.as_secs_f64()
    );
    let plan: Vec<Planned> = (0..jobs)
        .map(|i| {
            let op = match rng.random_range(0..10) {
                0..=4 => Op::Segmenter,
                5 => Op::StabilityRemove,
                6 | 7 => Op::Relight,
                _ => Op::Generate,
            };
            let owner = rng.random_range(0..owners);
            let key = rng.random_bool(0.4).then(|| format!("chaos-{seed}-{i}"));
            let twice = key.is_some() && rng.random_bool(0.3);
            let cancel = rng.random_bool(0.05).then(|| rng.random_range(0.0..2.0));
            (i, op, owner, key, twice, cancel)
        })
        .collect();
    let submitted: Arc<Mutex<Vec<Submitted>>> = Arc::default();
    let cancels = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (submitted, cancels, clients) = (submitted.clone(), cancels.clone(), clients.clone());
        // Keyed jobs with an even index go to the `serve` process that aborts after job
        // writes: their retries, with the same key, are safe across its restarts.
        let bases = [base.clone(), api_base.clone()];
        let gap = submit_window.as_secs_f64() / jobs as f64;
        tokio::spawn(async move {
            let gate = Arc::new(tokio::sync::Semaphore::new(8));
            let mut tasks = tokio::task::JoinSet::new();
            for (i, op, owner, key, twice, cancel) in plan {
                tokio::time::sleep(Duration::from_secs_f64(gap)).await;
                let permit = gate.clone().acquire_owned().await.unwrap();
                let (c, base, submitted, cancels) = (
                    clients[owner].clone(),
                    bases[usize::from(key.is_some() && i % 2 == 0)].clone(),
                    submitted.clone(),
                    cancels.clone(),
                );
                tasks.spawn(async move {
                    let _permit = permit;
                    let ids: Vec<String> = if twice {
                        // The same key POSTed twice at the same moment.
                        let (a, b) = tokio::join!(
                            submit_one(&c, &base, op, i, key.as_deref()),
                            submit_one(&c, &base, op, i, key.as_deref())
                        );
                        a.into_iter().chain(b).collect()
                    } else {
                        submit_one(&c, &base, op, i, key.as_deref())
                            .await
                            .into_iter()
                            .collect()
                    };
                    if let (Some(after), Some(id)) = (cancel, ids.first()) {
                        tokio::time::sleep(Duration::from_secs_f64(after)).await;
                        for _ in 0..20 {
                            let resp = c.post(format!("{base}/v1/jobs/{id}/cancel")).send().await;
                            match resp.map(|r| r.status().as_u16()) {
                                Ok(200 | 202 | 409) => {
                                    cancels.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    break;
                                }
                                _ => tokio::time::sleep(Duration::from_millis(300)).await,
                            }
                        }
                    }
                    submitted.lock().unwrap().push(Submitted {
                        owner: format!("chaos-{owner}"),
                        key,
                        ids,
                    });
                });
            }
            // A client task that panicked (an unexpected refusal) fails the run here.
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        })
    };

    // Kills: one worker every 10–30 s, restarted at once, until `kill_until`; each kill
    // remembers which jobs were processing then, and when the last of them ended. Aborts:
    // every process started until then carries one targeted abort (`Fleet::abort_plan`), and
    // is restarted when it has aborted; each abort remembers every job not yet ended.
    let kill_until = submit_window + Duration::from_secs(15);
    let mut crashes: Vec<Crash> = Vec::new();
    let mut kills = 0usize;
    let mut next_kill = started + Duration::from_secs(rng.random_range(10..=30));
    while started.elapsed() < kill_until || !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        crashes.extend(fleet.supervise(&owner_names).await);
        if started.elapsed() >= kill_until {
            fleet.plan_aborts = false;
            continue;
        }
        if Instant::now() < next_kill {
            continue;
        }
        let processing = interrupted(&env, &owner_names, false).await;
        let victim = fleet
            .workers
            .remove(rng.random_range(0..fleet.workers.len()));
        fleet.ended_counts.push(victim.kill());
        kills += 1;
        crashes.push(Crash {
            at: time::OffsetDateTime::now_utc(),
            what: "worker SIGKILL".into(),
            interrupted: processing,
        });
        let w = fleet.start(Role::Worker);
        fleet.workers.push(w);
        next_kill = Instant::now() + Duration::from_secs(rng.random_range(10..=30));
    }
    fleet.plan_aborts = false;
    load.await.unwrap();

    // Drain: every job terminal and its webhook delivered, within the CI budget.
    // 345 s for the CI variant (inside its 6 minutes). A message held by a killed worker
    // (run, poll or notify) is replaced by the sweeper within about a lease or a grace (30 s,
    // 60 s), so the drain needs no wait for the 360 s visibility timeout.
    let budget = Duration::from_secs(env_or(
        "CHAOS_BUDGET_SECONDS",
        if jobs > CI_JOBS {
            // The load may outlast its window on a busy machine (moto slows as the table
            // grows): the drain is counted from the load's end.
            started.elapsed().max(kill_until).as_secs() + 300
        } else {
            345
        },
    ));
    let submitted = submitted.lock().unwrap().clone();
    let mut all;
    loop {
        all = all_jobs(&env, &owner_names).await;
        let open = all.iter().filter(|j| !j.status.is_terminal()).count();
        let delivered: HashSet<String> = hooks
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        let unnotified = all
            .iter()
            .filter(|j| j.status.is_terminal())
            .filter(|j| !delivered.contains(&format!("msg_{}_{}", j.id, j.status.as_str())))
            .count();
        if (open == 0 && unnotified == 0) || started.elapsed() > budget {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        // An incarnation started before the kills stopped may still abort.
        crashes.extend(fleet.supervise(&owner_names).await);
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let elapsed = started.elapsed();

    // Fault counts: this process's decorators, and the last report of every worker
    // incarnation (the killed ones' and the ones still running).
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    for (kind, n) in api_faults.counts() {
        *faults.entry(kind.name().to_owned()).or_default() += n;
    }
    let running: Vec<BTreeMap<String, u64>> = fleet
        .workers
        .iter()
        .chain(fleet.api.iter())
        .map(|w| w.faults.lock().unwrap().clone())
        .collect();
    for counts in fleet.ended_counts.iter().chain(running.iter()) {
        for (k, n) in counts {
            *faults.entry(k.clone()).or_default() += n;
        }
    }
    for (name, fake, answer) in [
        ("segmenter_5xx", "segmenter", Answer::Status5xx),
        ("segmenter_429", "segmenter", Answer::TooMany),
        ("segmenter_hang", "segmenter", Answer::Hang),
    ] {
        faults.insert(name.into(), fakes.count(fake, answer) as u64);
    }
    for (name, answer) in [
        ("provider_429", Answer::TooMany),
        ("provider_5xx", Answer::Status5xx),
        ("provider_accept_then_hang", Answer::Hang),
    ] {
        let n: usize = ["stability.relight", "stability.remove", "fal.submit"]
            .iter()
            .map(|f| fakes.count(f, answer))
            .sum();
        faults.insert(name.into(), n as u64);
    }
    faults.insert("worker_sigkill".into(), kills as u64);
    for point in AbortPoint::ALL {
        let n = fleet.aborts.get(&point).copied().unwrap_or(0);
        faults.insert(format!("abort_after_{}", point.name()), n);
    }

    // The invariants.
    let by_id: HashMap<String, &Job> = all.iter().map(|j| (j.id.to_string(), j)).collect();
    let accepted: Vec<&String> = submitted.iter().flat_map(|s| s.ids.iter()).collect();
    let never_accepted: Vec<&Submitted> = submitted.iter().filter(|s| s.ids.is_empty()).collect();
    let lost: Vec<String> = accepted
        .iter()
        .filter(|id| {
            !by_id
                .get(id.as_str())
                .is_some_and(|j| j.status.is_terminal())
        })
        .map(|id| id.to_string())
        .chain(
            all.iter()
                .filter(|j| !j.status.is_terminal())
                .map(|j| j.id.to_string()),
        )
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut key_jobs: HashMap<(&str, &str), HashSet<&str>> = HashMap::new();
    for s in &submitted {
        if let Some(key) = &s.key {
            key_jobs
                .entry((s.owner.as_str(), key.as_str()))
                .or_default()
                .extend(s.ids.iter().map(String::as_str));
        }
    }
    let split_keys: Vec<_> = key_jobs.iter().filter(|(_, ids)| ids.len() > 1).collect();
    // Paid calls per job from the fakes' logs: the relight and remove ids are the input's
    // hash, fal's the prompt; each job has its own input or prompt.
    let mut double_paid: Vec<String> = Vec::new();
    for fake in ["stability.relight", "stability.remove", "fal.submit"] {
        for (tag, n) in fakes.per_tag(fake) {
            if n > 1 {
                double_paid.push(format!("{fake} {tag}: {n} submits"));
            }
        }
    }
    let mut leaked = 0i64;
    for owner in &owner_names {
        leaked += env.in_flight(owner).await.abs();
    }
    let min_seen = min_in_flight.load(std::sync::atomic::Ordering::Relaxed);
    let s3 = env.aws().blobs;
    let mut missing_results = Vec::new();
    for job in all.iter().filter(|j| j.status == JobStatus::Succeeded) {
        let result = job.result.as_ref().expect("a succeeded job has a result");
        let mut objects = vec![(result.key.clone(), result.bytes)];
        objects.extend(result.images.iter().map(|i| (i.key.clone(), i.bytes)));
        for (key, size) in objects {
            use shared::core::BlobStore;
            match s3.head(&key).await.unwrap() {
                Some(info) if info.size == size => {}
                other => missing_results.push(format!("{} {key}: {other:?} vs {size}", job.id)),
            }
        }
    }
    let deliveries = hooks.lock().unwrap().clone();
    let mut per_webhook: HashMap<&str, Vec<time::OffsetDateTime>> = HashMap::new();
    for (id, at) in &deliveries {
        per_webhook.entry(id.as_str()).or_default().push(*at);
    }
    // A repeat is the at-least-once case the issue allows only with a fault on the notify
    // path: a crash after a POST and before its delivery was recorded. So a repeat counts as
    // explained only when a crash falls between it and the delivery before it.
    let mut duplicate_webhooks = 0usize;
    let mut unexplained_duplicates: Vec<String> = Vec::new();
    for (id, times) in &mut per_webhook {
        times.sort();
        for pair in times.windows(2) {
            duplicate_webhooks += 1;
            if !crashes.iter().any(|c| pair[0] <= c.at && c.at <= pair[1]) {
                unexplained_duplicates.push(format!("{id} at {} and {}", pair[0], pair[1]));
            }
        }
    }
    let unnotified: Vec<String> = all
        .iter()
        .filter(|j| j.status.is_terminal())
        .filter(|j| {
            !per_webhook.contains_key(format!("msg_{}_{}", j.id, j.status.as_str()).as_str())
        })
        .map(|j| j.id.to_string())
        .collect();
    let max_receive = env.settings.jobs.max_receive_count;
    let over_attempts: Vec<String> = all
        .iter()
        .filter(|j| j.attempts > max_receive)
        .map(|j| format!("{} {}", j.id, j.attempts))
        .collect();
    let mut latencies: Vec<f64> = all
        .iter()
        .filter_map(|j| j.finished_at.map(|f| (f - j.created_at).as_seconds_f64()))
        .collect();
    latencies.sort_by(f64::total_cmp);
    // Per crash: until the last job it interrupted ended (from the records' `finished_at`; a
    // job that never ended counts as infinite).
    let finished: HashMap<ulid::Ulid, Option<time::OffsetDateTime>> =
        all.iter().map(|j| (j.id, j.finished_at)).collect();
    // With the slowest job, so a long recovery can be looked up in the logs.
    crashes.sort_by_key(|c| c.at);
    let recoveries: Vec<(f64, Option<ulid::Ulid>)> = crashes
        .iter()
        .map(|crash| {
            crash
                .interrupted
                .iter()
                .map(|(id, _)| match finished.get(id) {
                    Some(Some(end)) => ((*end - crash.at).as_seconds_f64(), Some(*id)),
                    _ => (f64::INFINITY, Some(*id)),
                })
                .fold((0.0, None), |a, b| if b.0 > a.0 { b } else { a })
        })
        .collect();
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for j in &all {
        *by_status.entry(j.status.as_str()).or_default() += 1;
    }
    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for j in all.iter().filter_map(|j| j.error.as_ref()) {
        *codes.entry(j.code.as_str()).or_default() += 1;
    }

    eprintln!(
        "\nchaos run: seed {seed} (CHAOS_SEED={seed}), {:.0} s",
        elapsed.as_secs_f64()
    );
    eprintln!("| measure | value |\n|---|---|");
    eprintln!(
        "| jobs | {} submitted, {} accepted ids, {} job records ({} owners) |",
        submitted.len(),
        accepted.iter().collect::<HashSet<_>>().len(),
        all.len(),
        owners
    );
    eprintln!("| outcomes | {by_status:?} |");
    eprintln!("| failure codes | {codes:?} |");
    eprintln!(
        "| cancels sent | {} |",
        cancels.load(std::sync::atomic::Ordering::Relaxed)
    );
    for (kind, n) in &faults {
        eprintln!("| fault {kind} | {n} |");
    }
    eprintln!("| kills | {kills} |");
    eprintln!("| lost jobs | {} |", lost.len());
    eprintln!("| double-paid jobs | {} |", double_paid.len());
    eprintln!("| leaked quota | {leaked} (lowest sample {min_seen}, {samples} samples) |");
    eprintln!(
        "| duplicate webhooks | {duplicate_webhooks} ({} deliveries; {} with no crash between the two) |",
        deliveries.len(),
        unexplained_duplicates.len()
    );
    eprintln!(
        "| terminal jobs without a webhook at the end | {} |",
        unnotified.len()
    );
    eprintln!(
        "| job latency p50 / p95 | {:.1} s / {:.1} s |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95)
    );
    eprintln!(
        "| recovery after a crash (every job it interrupted ended) | {} |",
        recoveries
            .iter()
            .zip(&crashes)
            .map(|((r, slowest), crash)| match slowest {
                Some(id) => format!("{}: {r:.0} s ({id})", crash.what),
                None => format!("{}: {r:.0} s", crash.what),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Every broken invariant is reported, not only the first.
    let mut broken: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            broken.push(what);
        }
    };
    check(
        never_accepted.is_empty(),
        format!("never accepted: {never_accepted:?}"),
    );
    check(lost.is_empty(), format!("not terminal (lost): {lost:?}"));
    check(
        split_keys.is_empty(),
        format!("keys with several jobs: {split_keys:?}"),
    );
    check(
        double_paid.is_empty(),
        format!("paid twice: {double_paid:?}"),
    );
    check(
        leaked == 0,
        format!("in-flight counters not back to 0: {leaked}"),
    );
    check(
        min_seen >= 0,
        format!("an in-flight counter went negative: {min_seen}"),
    );
    check(
        samples >= 10,
        format!("the quota sampler took {samples} samples"),
    );
    check(
        missing_results.is_empty(),
        format!("results: {missing_results:?}"),
    );
    // Every ended job's webhook, including those whose notify message a killed worker held:
    // the outbox entry stays until delivery, and the sweeper relays it.
    check(
        unnotified.is_empty(),
        format!("no webhook for {} jobs: {unnotified:?}", unnotified.len()),
    );
    check(
        unexplained_duplicates.is_empty(),
        format!(
            "duplicate webhook deliveries with no crash between them: {unexplained_duplicates:?}"
        ),
    );
    check(
        over_attempts.is_empty(),
        format!("attempts over {max_receive}: {over_attempts:?}"),
    );
    check(kills > 0, "no worker was killed: nothing was tested".into());
    // Recovery within 2 minutes of each crash. A job a later crash interrupted again at a
    // later turn (a new claim, poll or relay: the same turn still open is the same
    // interruption) is measured from that crash instead (each may cost it a lease or a grace).
    for (k, (recovery, slowest)) in recoveries.iter().enumerate() {
        let hit_again = slowest.is_some_and(|id| {
            let Some((_, then)) = crashes[k].interrupted.iter().find(|(j, _)| *j == id) else {
                return false;
            };
            crashes[k + 1..].iter().any(|later| {
                later
                    .interrupted
                    .iter()
                    .any(|(j, turn)| *j == id && turn != then)
            })
        });
        check(
            *recovery <= RECOVERY_LIMIT_SECONDS || hit_again,
            format!(
                "crash {} ({}): the jobs it interrupted ended {recovery:.0} s after it (slowest {slowest:?}), over {RECOVERY_LIMIT_SECONDS} s; where each crash found it: {:?}; its log lines:\n{}",
                k + 1,
                crashes[k].what,
                crashes
                    .iter()
                    .filter_map(|c| c.interrupted.iter().find(|(j, _)| Some(*j) == *slowest))
                    .map(|(_, turn)| turn)
                    .collect::<Vec<_>>(),
                slowest.map(|id| job_log(&logs, id)).unwrap_or_default(),
            ),
        );
    }
    for kind in FaultKind::ALL {
        let n = faults.get(kind.name()).copied().unwrap_or(0);
        check(
            n >= 5,
            format!(
                "fault {} fired {n} times (< 5): the run is void",
                kind.name()
            ),
        );
    }
    // Kills and aborts are fewer by nature; every window still takes at least one abort.
    for (kind, n) in &faults {
        let least = if kind == "worker_sigkill" || kind.starts_with("abort_after_") {
            1
        } else {
            5
        };
        check(
            *n >= least,
            format!("fault {kind} fired {n} times (< {least}): the run is void"),
        );
    }
    assert!(broken.is_empty(), "seed {seed}: {broken:#?}");
}

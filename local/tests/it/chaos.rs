//! Chaos: worker processes killed with SIGKILL mid-job, on the real local stack (moto, the real
//! segmenter with real u2netp weights, the API, and `imagejobs-local worker` processes beside
//! the in-process processor). Every accepted job must still succeed, none may run more than
//! once past the kill, and the interrupted ones must finish within 2 minutes of it with the
//! production lease (30 s): the recovery sweeper, not the 360 s visibility timeout, brings
//! them back.

use std::process::Child;
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::common::{TestEnv, sample_photo, spawn_worker, start_segmenter_with, wait_until_ended};
use shared::job::{JobStatus, OwnerId};

/// An `imagejobs-local worker` process on `env`'s stack; SIGKILLed when dropped.
struct Worker(Child);

impl Worker {
    fn start(env: &TestEnv, segmenter: &str) -> Self {
        let vars = [
            ("SEGMENTER_URL".to_owned(), segmenter.to_owned()),
            ("PROCESSOR_BATCH_SIZE".to_owned(), "4".to_owned()),
        ];
        Self(spawn_worker(env, &vars, |_| {}))
    }

    /// SIGKILL: no shutdown, no lease given back, in-flight messages left invisible.
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_nothing_and_its_jobs_finish_within_two_minutes() {
    const JOBS: usize = 24;
    let mut env = TestEnv::new().await;
    let (segmenter, _models) = start_segmenter_with(&["u2netp"]).await;
    let stack = env
        .start_stack_sweeping(&segmenter, Some(Duration::from_secs(5)))
        .await;
    let base = stack.api_url();
    let victim = Worker::start(&env, &segmenter);
    let _other = Worker::start(&env, &segmenter);

    let c = env.client("anonymous").await;
    let photo = sample_photo();
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        let form = Form::new()
            .text("model", "u2netp")
            .part("file", Part::bytes(photo.clone()).file_name("rocket.jpg"));
        let resp = c
            .post(format!("{base}/v1/jobs"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let job: Value = resp.json().await.unwrap();
        ids.push(job["id"].as_str().unwrap().parse::<ulid::Ulid>().unwrap());
    }
    // Mid-run: the backlog (seconds of work for 2 cores) keeps every worker holding claims.
    tokio::time::sleep(Duration::from_millis(500)).await;
    victim.kill();
    let killed = Instant::now();
    let _restarted = Worker::start(&env, &segmenter);

    let owner = OwnerId::parse("anonymous").unwrap();
    let ended = wait_until_ended(&env, &owner, &ids, Duration::from_secs(150)).await;
    let recovered_in = killed.elapsed();
    assert_eq!(ended.len(), JOBS, "every accepted job ended");
    for job in &ended {
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
        let result = job.result.as_ref().unwrap();
        assert!(
            result.bytes > 0 && result.width == 640 && result.height == 427,
            "{result:?}"
        );
        let foreground = result.foreground_fraction.unwrap();
        assert!(
            foreground > 0.005 && foreground < 0.5,
            "a real cutout: {foreground}"
        );
        assert!(
            job.attempts <= 2,
            "run at most once more after the kill: {job:?}"
        );
    }
    let interrupted = ended.iter().filter(|j| j.attempts == 2).count();
    assert!(
        interrupted > 0,
        "the kill interrupted no job: nothing was tested"
    );
    assert!(
        recovered_in < Duration::from_secs(120),
        "the interrupted jobs finished {recovered_in:?} after the kill"
    );
    eprintln!(
        "chaos: {JOBS} jobs succeeded; {interrupted} interrupted by the SIGKILL finished {:.1} s after it",
        recovered_in.as_secs_f64()
    );
}

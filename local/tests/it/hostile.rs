//! The hostile-input suite, through the public HTTP API: forged, expired and unsigned tokens,
//! revoked keys, cross-owner access on every route, SSRF attempts, oversized and mistyped
//! bodies, quota exhaustion, and uploads that do not match their declaration. Each refusal
//! asserts the status, the error code, and that no job, queue message or object was created.

use crate::common;

use crate::common::{JWT_SECRET, TestEnv, assert_error, authed, http, sample_photo, upload};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use shared::auth::{self, Scope};
use shared::job::OwnerId;

#[tokio::test]
async fn credentials_are_checked_and_each_failure_has_its_own_code() {
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let jobs = format!("{base}/v1/jobs");

    let resp = http().get(&jobs).send().await.unwrap();
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_error(resp, 401, "unauthorized").await;
    let resp = http()
        .post(&jobs)
        .multipart(upload(sample_photo()))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;

    let resp = authed("ij_live_0000000000000000000000000000000000000000deadbeef")
        .get(&jobs)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "invalid_api_key").await;

    // A revoked key stops working at once.
    let key = env.api_key_with("team-r", "jobs:read").await;
    assert_eq!(authed(&key).get(&jobs).send().await.unwrap().status(), 200);
    use shared::core::ApiKeyStore;
    let id = format!("key_{}", &auth::hash_api_key(&key)[..16]);
    assert!(env.aws().keys.revoke_key(&id).await.unwrap());
    let resp = authed(&key).get(&jobs).send().await.unwrap();
    assert_error(resp, 401, "api_key_revoked").await;

    // X-API-Key works like the bearer form.
    let key = env.api_key_with("team-x", "jobs:read").await;
    let resp = http()
        .get(&jobs)
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Tokens.
    let owner = OwnerId::parse("team-t").unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (expired, _) = auth::issue_token(
        JWT_SECRET.as_bytes(),
        &owner,
        &[Scope::JobsRead],
        time::Duration::seconds(-5),
        now,
    )
    .unwrap();
    assert_error(
        authed(&expired).get(&jobs).send().await.unwrap(),
        401,
        "token_expired",
    )
    .await;
    let (forged, _) = auth::issue_token(
        b"a-secret-we-never-configured",
        &owner,
        &[Scope::Admin],
        time::Duration::hours(1),
        now,
    )
    .unwrap();
    assert_error(
        authed(&forged).get(&jobs).send().await.unwrap(),
        401,
        "token_invalid_signature",
    )
    .await;
    let claims = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"sub":"team-t","scope":"admin","exp":{},"iat":0,"jti":"x"}}"#,
        now.unix_timestamp() + 3600
    ));
    let none = format!(
        "{}.{claims}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    assert_error(
        authed(&none).get(&jobs).send().await.unwrap(),
        401,
        "token_algorithm_not_allowed",
    )
    .await;
    assert_error(
        authed("eyJhbGciOiJIUzI1NiJ9.garbage")
            .get(&jobs)
            .send()
            .await
            .unwrap(),
        401,
        "token_malformed",
    )
    .await;

    // The real exchange: a key for a token, the token for access; a token cannot mint tokens.
    let key = env.api_key_with("team-t", "jobs:read").await;
    let resp = authed(&key)
        .post(format!("{base}/v1/auth/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let token: Value = resp.json().await.unwrap();
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 3600);
    assert_eq!(token["scope"], "jobs:read");
    let jwt = token["access_token"].as_str().unwrap();
    assert_eq!(authed(jwt).get(&jobs).send().await.unwrap().status(), 200);
    let resp = authed(jwt)
        .post(format!("{base}/v1/auth/token"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "api_key_required").await;

    // Scopes: a read-only token cannot write; a write-only key cannot read.
    let resp = authed(jwt)
        .post(&jobs)
        .multipart(upload(sample_photo()))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "insufficient_scope").await;
    let writer = env.api_key_with("team-w", "jobs:write").await;
    assert_error(
        authed(&writer).get(&jobs).send().await.unwrap(),
        403,
        "insufficient_scope",
    )
    .await;
    env.assert_nothing_stored().await;
}

#[tokio::test]
async fn another_owners_job_is_a_404_on_every_route() {
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let alice = env.client("alice").await;
    let mallory = env.client("mallory").await;
    let job: Value = alice
        .post(format!("{base}/v1/jobs"))
        .multipart(upload(sample_photo()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let input_key = job["inputs"]["image"]["key"].as_str().unwrap();

    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/result")] {
        let resp = mallory.get(format!("{base}{path}")).send().await.unwrap();
        assert_error(resp, 404, "job_not_found").await;
        assert_eq!(
            alice
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status()
                .is_client_error(),
            path.ends_with("result")
        );
    }
    let resp = mallory
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "job_not_found").await;
    let still: Value = alice
        .get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        still["status"], "queued",
        "another owner's cancel changed nothing"
    );
    let listed: Value = mallory
        .get(format!("{base}/v1/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["jobs"].as_array().unwrap().is_empty());
    // Nor can another owner use Alice's stored objects as inputs.
    let resp = mallory
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"input": format!("s3://{}/{input_key}", env.settings.resources.bucket)}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "input_not_found").await;
    let resp = mallory
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"input": format!("s3://{}/uploads/mallory/../alice/x", env.settings.resources.bucket)}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "input_not_found").await;
    assert_eq!(env.table_items().await, 1, "only Alice's job exists");
}

#[tokio::test]
async fn url_inputs_cannot_reach_private_networks() {
    let mut env = TestEnv::new().await;
    env.settings.egress.allow_http_urls = true; // so the address checks, not the scheme, are tested
    // A real host on loopback that redirects to addresses the API must never fetch.
    let photo = sample_photo();
    let app = axum::Router::new()
        .route(
            "/photo.jpg",
            axum::routing::get(move || async move { photo }),
        )
        .route(
            "/to-private",
            axum::routing::get(|| async {
                axum::response::Redirect::temporary("http://internal.test/secret")
            }),
        )
        .route(
            "/to-metadata",
            axum::routing::get(|| async {
                axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data/")
            }),
        )
        .route(
            "/loop",
            axum::routing::get(|| async { axum::response::Redirect::temporary("/loop") }),
        )
        .route(
            "/huge.jpg",
            axum::routing::get(|| async { vec![0xFFu8; 2_000_000] }),
        );
    let host = common::serve_router(app).await;
    env.settings.limits.max_bytes = 1_000_000;
    let port = host.port();
    let base = env
        .serve_api_resolving(
            &[
                ("images.test", "127.0.0.1"),
                ("internal.test", "10.0.0.1"),
                ("sneaky.test", "192.168.1.7"),
                ("v6.test", "::1"),
            ],
            vec![host],
        )
        .await;
    let c = env.client("attacker").await;
    let post = |url: String| {
        c.post(format!("{base}/v1/jobs"))
            .json(&json!({"input": url}))
            .send()
    };

    for (url, status, code) in [
        (
            "http://127.0.0.1/x.jpg".to_owned(),
            400,
            "url_address_not_allowed",
        ),
        (
            "http://10.0.0.1/x.jpg".to_owned(),
            400,
            "url_address_not_allowed",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            400,
            "url_address_not_allowed",
        ),
        (
            "http://[::1]/x.jpg".to_owned(),
            400,
            "url_address_not_allowed",
        ),
        (
            "http://[::ffff:127.0.0.1]/x.jpg".to_owned(),
            400,
            "url_address_not_allowed",
        ),
        (
            "http://[fd00:ec2::254]/latest/meta-data/".to_owned(),
            400,
            "url_address_not_allowed",
        ),
        // Not in this resolver's table (the system resolver's answer is tested below).
        (
            "http://localhost/x.jpg".to_owned(),
            422,
            "input_fetch_failed",
        ),
        (
            "http://sneaky.test/x.jpg".to_owned(),
            400,
            "url_address_not_allowed",
        ),
        (
            "http://v6.test/x.jpg".to_owned(),
            400,
            "url_address_not_allowed",
        ),
        (
            format!("http://images.test:{port}/to-private"),
            400,
            "url_address_not_allowed",
        ),
        (
            format!("http://images.test:{port}/to-metadata"),
            400,
            "url_address_not_allowed",
        ),
        (
            format!("http://images.test:{port}/loop"),
            422,
            "too_many_redirects",
        ),
        (
            format!("http://images.test:{port}/huge.jpg"),
            413,
            "payload_too_large",
        ),
        (
            "file:///etc/passwd".to_owned(),
            400,
            "invalid_input_reference",
        ),
        (
            "gopher://images.test/x".to_owned(),
            400,
            "invalid_input_reference",
        ),
    ] {
        let resp = post(url.clone()).await.unwrap();
        let got = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            (got, body["error"]["code"].as_str().unwrap()),
            (status, code),
            "{url}: {body}"
        );
    }
    // The same host, asked for a real image, is fine: the refusals above are about where, not
    // whether, the API fetches.
    let resp = post(format!("http://images.test:{port}/photo.jpg"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(env.table_items().await, 1);
    assert_eq!(env.queued_messages().await, 1);

    // Plain http is refused unless a deployment opts in for local development.
    env.settings.egress.allow_http_urls = false;
    let base = env
        .serve_api_resolving(&[("images.test", "127.0.0.1")], vec![host])
        .await;
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"input": format!("http://images.test:{port}/photo.jpg")}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "url_scheme_not_allowed").await;
}

#[tokio::test]
async fn the_system_resolver_refuses_localhost() {
    let mut env = TestEnv::new().await;
    env.settings.egress.allow_http_urls = true;
    let base = env.serve_api().await;
    let c = env.client("attacker").await;
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"input": "http://localhost:9/x.jpg"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "url_address_not_allowed").await;
    env.assert_nothing_stored().await;
}

#[tokio::test]
async fn bodies_of_the_wrong_size_or_type_are_refused() {
    let mut env = TestEnv::new().await;
    env.settings.limits.max_bytes = 60_000;
    let base = env.serve_api().await;
    let c = env.client("anonymous").await;
    let jobs = format!("{base}/v1/jobs");
    let resp = c
        .post(&jobs)
        .multipart(upload(vec![0u8; 200_000]))
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "payload_too_large").await;
    let resp = c
        .post(&jobs)
        .header("content-type", "application/xml")
        .body("<job/>")
        .send()
        .await
        .unwrap();
    assert_error(resp, 415, "unsupported_media_type").await;
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;".to_vec();
    let resp = c.post(&jobs).multipart(upload(gif)).send().await.unwrap();
    let body = assert_error(resp, 415, "unsupported_image").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("image/gif"),
        "{body}"
    );
    env.assert_nothing_stored().await;
}

#[tokio::test]
async fn quotas_refuse_with_429_and_retry_after() {
    let mut env = TestEnv::new().await;
    env.settings.jobs.max_per_minute = 2;
    let base = env.serve_api().await;
    let c = env.client("busy").await;
    for _ in 0..2 {
        let resp = c
            .post(format!("{base}/v1/jobs"))
            .multipart(upload(sample_photo()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .multipart(upload(sample_photo()))
        .send()
        .await
        .unwrap();
    let retry_after = common::retry_after(&resp).expect("a 429 says when to come back");
    assert!((1..=60).contains(&retry_after.as_secs()));
    assert_error(resp, 429, "rate_limited").await;
    assert_eq!(env.table_items().await, 2);
    assert_eq!(env.queued_messages().await, 2);
    assert_eq!(
        env.objects().await.len(),
        2,
        "the refused request's input is not kept"
    );

    // In flight: one at a time; a finished job frees its slot.
    let mut env = TestEnv::new().await;
    env.settings.jobs.max_in_flight = 1;
    let base = env.serve_api().await;
    let c = env.client("busy").await;
    let first: Value = c
        .post(format!("{base}/v1/jobs"))
        .multipart(upload(sample_photo()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .multipart(upload(sample_photo()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "10");
    assert_error(resp, 429, "too_many_jobs_in_flight").await;
    assert_eq!(env.in_flight("busy").await, 1);
    use shared::core::JobTransitions;
    let owner = OwnerId::parse("busy").unwrap();
    let id = ulid::Ulid::from_string(first["id"].as_str().unwrap()).unwrap();
    let error = shared::job::JobError::new("test", "finished by the test");
    env.aws()
        .jobs
        .fail(&owner, id, &error, time::OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(env.in_flight("busy").await, 0);
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .multipart(upload(sample_photo()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn uploads_must_match_their_declaration() {
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let c = env.client("uploader").await;
    let declare = |body: Value| c.post(format!("{base}/v1/uploads")).json(&body).send();

    assert_error(
        declare(json!({"content_type": "text/html", "content_length": 10}))
            .await
            .unwrap(),
        415,
        "unsupported_image",
    )
    .await;
    assert_error(
        declare(json!({"content_type": "image/png", "content_length": 0}))
            .await
            .unwrap(),
        400,
        "invalid_params",
    )
    .await;
    assert_error(
        declare(json!({"content_type": "image/png", "content_length": 26_214_401u64}))
            .await
            .unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    assert_error(
        declare(json!({"content_type": "image/png"})).await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    let resp = http()
        .post(format!("{base}/v1/uploads"))
        .json(&json!({"content_type": "image/png", "content_length": 5}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;

    // Declared as a 1000-byte PNG; the client PUTs the JPEG instead (the emulator, unlike S3,
    // does not check the signed headers, so the API's own check is what is tested here).
    let upload: Value = declare(json!({"content_type": "image/png", "content_length": 1000}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let put = reqwest::Client::new()
        .put(upload["url"].as_str().unwrap())
        .header("content-type", "image/jpeg")
        .body(sample_photo())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"input": upload["input"]}))
        .send()
        .await
        .unwrap();
    let body = assert_error(resp, 422, "upload_mismatch").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1000 bytes of image/png"),
        "{body}"
    );

    // An upload id that was never declared.
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"input": format!("s3://{}/uploads/uploader/01JD0000000000000000000000", env.settings.resources.bucket)}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "input_not_found").await;
    assert_eq!(env.table_items().await, 0);
    assert_eq!(env.queued_messages().await, 0);
}

#[tokio::test]
async fn cors_request_ids_and_security_headers() {
    let mut env = TestEnv::new().await;
    env.settings.auth.cors_allowed_origins = vec!["https://app.example".into()];
    let base = env.serve_api().await;
    let preflight = |origin: &'static str| {
        http()
            .request(reqwest::Method::OPTIONS, format!("{base}/v1/jobs"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,idempotency-key",
            )
            .send()
    };
    let resp = preflight("https://app.example").await.unwrap();
    assert!(resp.status().is_success());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("idempotency-key")
    );
    let resp = preflight("https://evil.example").await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    let resp = http()
        .get(format!("{base}/v1/jobs"))
        .header("x-request-id", "trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-123");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(resp.headers()[name], value);
    }
    assert!(resp.headers().contains_key("strict-transport-security"));
    let resp = http().get(format!("{base}/health")).send().await.unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap();
    assert!(ulid::Ulid::from_string(generated).is_ok(), "{generated}");
}

/// A create over a spent quota is refused from the counters alone, before its input is stored:
/// the blob store here fails every put, so a refusal that still tried to store first (and
/// deleted after) would answer 503 `dependency_unavailable` instead of the 429.
#[tokio::test]
async fn a_create_over_a_spent_quota_is_refused_before_its_input_is_stored() {
    use shared::core::Created;
    use shared::faults::{FaultPlan, Faults, Faulty};
    use std::sync::Arc;

    for (code, in_flight, per_minute) in [
        ("too_many_jobs_in_flight", 1, 100),
        ("rate_limited", 100, 1),
    ] {
        // The per-minute counter must not roll over between the two creates.
        let second = time::OffsetDateTime::now_utc().second();
        if second >= 50 {
            tokio::time::sleep(std::time::Duration::from_secs(u64::from(61 - second))).await;
        }
        let mut env = TestEnv::new().await;
        env.settings.jobs.max_in_flight = in_flight;
        env.settings.jobs.max_per_minute = per_minute;
        let aws = env.aws();
        let owner = OwnerId::parse("busy").unwrap();
        let submitter = |blobs: Arc<dyn shared::core::BlobStore>| {
            env.submitter(
                Arc::new(aws.jobs.clone()),
                Arc::new(aws.queue.clone()),
                blobs,
            )
        };
        let first = submitter(Arc::new(aws.blobs.clone()))
            .submit(common::photo_submission(&owner, None))
            .await
            .unwrap();
        assert!(matches!(first, Created::New(_)), "{first:?}");
        let mut plan = FaultPlan::uniform(7, 0.0);
        plan.rates[0] = 1.0; // FaultKind::Error: every put fails before it is made
        let failing_puts = Arc::new(Faulty::new(aws.blobs.clone(), Arc::new(Faults::new(plan))));
        match submitter(failing_puts)
            .submit(common::photo_submission(&owner, None))
            .await
        {
            Err(shared::Error::QuotaExceeded { code: got, .. }) => assert_eq!(got, code),
            other => panic!("{code}: expected a refusal before the put, got {other:?}"),
        }
        assert_eq!(env.table_items().await, 1, "{code}: only the first job");
        assert_eq!(
            env.objects().await.len(),
            1,
            "{code}: only the first job's input"
        );
    }
}

/// The quota pre-check is advisory: when its read fails, the create goes on and the
/// transaction's conditions decide, both ways. A job with room is created; one over a spent
/// in-flight quota is still refused, and the input it stored is deleted again.
#[tokio::test]
async fn a_create_whose_quota_read_fails_is_decided_by_the_transaction() {
    use async_trait::async_trait;
    use shared::core::{Created, Idempotency, JobPage, JobStore, ListQuery};
    use shared::job::Job;
    use std::sync::Arc;
    use time::OffsetDateTime;
    use ulid::Ulid;

    /// The emulator's store, but every quota pre-check read fails.
    struct QuotaReadFails<T>(T);
    #[async_trait]
    impl<T: JobStore> JobStore for QuotaReadFails<T> {
        async fn create(
            &self,
            job: &Job,
            idempotency: Option<&Idempotency>,
        ) -> shared::Result<Created> {
            self.0.create(job, idempotency).await
        }
        async fn find_idempotent(
            &self,
            owner: &OwnerId,
            idempotency: &Idempotency,
        ) -> shared::Result<Option<Job>> {
            self.0.find_idempotent(owner, idempotency).await
        }
        async fn get(&self, owner: &OwnerId, id: Ulid) -> shared::Result<Option<Job>> {
            self.0.get(owner, id).await
        }
        async fn list(&self, owner: &OwnerId, query: &ListQuery) -> shared::Result<JobPage> {
            self.0.list(owner, query).await
        }
        async fn discard(
            &self,
            owner: &OwnerId,
            id: Ulid,
            idempotency_key: Option<&str>,
        ) -> shared::Result<()> {
            self.0.discard(owner, id, idempotency_key).await
        }
        async fn created_in_minute(
            &self,
            owner: &OwnerId,
            at: OffsetDateTime,
        ) -> shared::Result<u32> {
            self.0.created_in_minute(owner, at).await
        }
        async fn check_quota(&self, _: &OwnerId, _: OffsetDateTime) -> shared::Result<()> {
            Err(shared::Error::unavailable(
                "dynamodb",
                "injected: the counters cannot be read",
            ))
        }
    }

    let mut env = TestEnv::new().await;
    env.settings.jobs.max_in_flight = 1;
    let aws = env.aws();
    let owner = OwnerId::parse("busy").unwrap();
    let submitter = env.submitter(
        Arc::new(QuotaReadFails(aws.jobs.clone())),
        Arc::new(aws.queue.clone()),
        Arc::new(aws.blobs.clone()),
    );
    let first = submitter
        .submit(common::photo_submission(&owner, None))
        .await
        .unwrap();
    assert!(matches!(first, Created::New(_)), "{first:?}");
    match submitter
        .submit(common::photo_submission(&owner, None))
        .await
    {
        Err(shared::Error::QuotaExceeded { code, .. }) => {
            assert_eq!(code, "too_many_jobs_in_flight")
        }
        other => panic!("expected the transaction's refusal, got {other:?}"),
    }
    assert_eq!(env.table_items().await, 1, "only the first job");
    assert_eq!(env.objects().await.len(), 1, "only the first job's input");
}

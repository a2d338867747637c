//! `template.yaml` is the one source of resource shapes: local provisioning and the code's
//! constants must agree with it.

use serde_yaml_ng::Value;
use shared::resources as r;

use imagejobs_local::emulator::workspace_root;
use imagejobs_local::provision::{lifecycle_rules, table_key_schema};

fn template() -> Value {
    let text = std::fs::read_to_string(workspace_root().join("template.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    let r = &t["Resources"][name];
    assert!(!r.is_null(), "template.yaml has no resource {name}");
    &r["Properties"]
}

fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("not a number: {other:?}"),
    }
}

fn string(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

#[test]
fn table_matches_provisioning() {
    let t = template();
    let table = resource(&t, "JobsTable");
    let keys: Vec<(&str, &str)> = table["KeySchema"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| (string(&k["AttributeName"]), string(&k["KeyType"])))
        .collect();
    assert_eq!(keys, table_key_schema());
    let definitions: Vec<(&str, &str)> = table["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| (string(&d["AttributeName"]), string(&d["AttributeType"])))
        .collect();
    assert_eq!(
        definitions,
        [
            (r::TABLE_PARTITION_KEY, "S"),
            (r::TABLE_SORT_KEY, "S"),
            (r::PENDING_SHARD_ATTRIBUTE, "S"),
            (r::PENDING_DUE_ATTRIBUTE, "N"),
        ]
    );
    // The recovery sweeper's sparse index, as the adapter queries it and provisioning makes it.
    let indexes = table["GlobalSecondaryIndexes"].as_sequence().unwrap();
    assert_eq!(indexes.len(), 1);
    let pending = &indexes[0];
    assert_eq!(string(&pending["IndexName"]), r::PENDING_INDEX);
    let index_keys: Vec<(&str, &str)> = pending["KeySchema"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| (string(&k["AttributeName"]), string(&k["KeyType"])))
        .collect();
    assert_eq!(
        index_keys,
        [
            (r::PENDING_SHARD_ATTRIBUTE, "HASH"),
            (r::PENDING_DUE_ATTRIBUTE, "RANGE")
        ]
    );
    assert_eq!(string(&pending["Projection"]["ProjectionType"]), "INCLUDE");
    let projected: Vec<&str> = pending["Projection"]["NonKeyAttributes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(string)
        .collect();
    assert_eq!(projected, r::PENDING_INDEX_ATTRIBUTES);
    assert_eq!(
        string(&table["TimeToLiveSpecification"]["AttributeName"]),
        r::TABLE_TTL_ATTRIBUTE
    );
    assert_eq!(
        table["TimeToLiveSpecification"]["Enabled"],
        Value::Bool(true)
    );
    assert_eq!(string(&table["BillingMode"]), "PAY_PER_REQUEST");
}

#[test]
fn queues_match_provisioning_and_the_processor_timeout() {
    let t = template();
    let processor_timeout = num(&resource(&t, "ProcessorFunction")["Timeout"]);
    assert_eq!(processor_timeout, u64::from(r::PROCESSOR_TIMEOUT_SECONDS));
    let queue = resource(&t, "JobsQueue");
    let visibility = num(&queue["VisibilityTimeout"]);
    assert_eq!(
        visibility,
        u64::from(r::JOBS_QUEUE_VISIBILITY_TIMEOUT_SECONDS)
    );
    assert!(
        visibility >= 6 * processor_timeout,
        "AWS asks for ≥ 6× the function timeout"
    );
    assert_eq!(
        num(&queue["MessageRetentionPeriod"]),
        u64::from(r::JOBS_QUEUE_RETENTION_SECONDS)
    );
    assert_eq!(
        num(&queue["RedrivePolicy"]["maxReceiveCount"]),
        u64::from(r::JOBS_QUEUE_MAX_RECEIVE_COUNT)
    );
    let dlq = resource(&t, "JobsDeadLetterQueue");
    assert_eq!(
        num(&dlq["MessageRetentionPeriod"]),
        u64::from(r::DEAD_LETTER_QUEUE_RETENTION_SECONDS)
    );
    assert!(num(&dlq["VisibilityTimeout"]) >= processor_timeout);
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(
        num(&globals["MAX_RECEIVE_COUNT"]),
        u64::from(r::JOBS_QUEUE_MAX_RECEIVE_COUNT)
    );
}

#[test]
fn processor_reports_batch_item_failures_on_both_queues() {
    let t = template();
    let events = resource(&t, "ProcessorFunction")["Events"]
        .as_mapping()
        .unwrap();
    let mut queues = Vec::new();
    for (_, event) in events {
        assert_eq!(string(&event["Type"]), "SQS");
        let types: Vec<&str> = event["Properties"]["FunctionResponseTypes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(string)
            .collect();
        assert_eq!(types, ["ReportBatchItemFailures"]);
        let Value::Tagged(arn) = &event["Properties"]["Queue"] else {
            panic!("queue is a !GetAtt")
        };
        queues.push(string(&arn.value).to_owned());
    }
    queues.sort();
    assert_eq!(queues, ["JobsDeadLetterQueue.Arn", "JobsQueue.Arn"]);
    let env = &resource(&t, "ProcessorFunction")["Environment"]["Variables"];
    for name in ["SEGMENTER_URL", "DEAD_LETTER_QUEUE_ARN", "LEASE_SECONDS"] {
        assert!(!env[name].is_null(), "processor needs {name}");
    }
}

#[test]
fn bucket_lifecycle_and_ingest_prefix_match() {
    let t = template();
    let rules: Vec<(&str, u32)> = resource(&t, "ImagesBucket")["LifecycleConfiguration"]["Rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|rule| !rule["ExpirationInDays"].is_null())
        .map(|rule| {
            (
                string(&rule["Prefix"]),
                num(&rule["ExpirationInDays"]) as u32,
            )
        })
        .collect();
    assert_eq!(rules, lifecycle_rules());
    let event = &resource(&t, "IngestFunction")["Events"]["InboxUpload"];
    assert_eq!(string(&event["Type"]), "S3");
    let rule = &event["Properties"]["Filter"]["S3Key"]["Rules"][0];
    assert_eq!(string(&rule["Name"]), "prefix");
    assert_eq!(string(&rule["Value"]), r::INBOX_PREFIX);
}

#[test]
fn functions_get_the_variables_they_read_and_the_model_list_is_current() {
    let t = template();
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    for name in [
        "JOBS_TABLE",
        "JOBS_QUEUE_URL",
        "IMAGES_BUCKET",
        "DEFAULT_MODEL",
        "JOB_TTL_DAYS",
    ] {
        assert!(!globals[name].is_null(), "every function reads {name}");
    }
    let allowed: Vec<&str> = t["Parameters"]["DefaultModel"]["AllowedValues"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(string)
        .collect();
    assert_eq!(allowed, shared::models::known_names());
    for (function, binary) in [
        ("ApiFunction", "imagejobs-api"),
        ("ProcessorFunction", "imagejobs-processor"),
        ("IngestFunction", "imagejobs-ingest"),
    ] {
        let meta = &t["Resources"][function]["Metadata"];
        assert_eq!(string(&meta["BuildMethod"]), "rust-cargolambda");
        assert_eq!(string(&meta["BuildProperties"]["Binary"]), binary);
    }
}

#[test]
fn the_token_secret_is_generated_at_deploy_time_not_written_down() {
    let t = template();
    let secret = &t["Resources"]["JwtSigningSecret"];
    assert_eq!(string(&secret["Type"]), "AWS::SecretsManager::Secret");
    assert!(!secret["Properties"]["GenerateSecretString"].is_null());
    let env = &resource(&t, "ApiFunction")["Environment"]["Variables"];
    let Value::Tagged(sub) = &env["JWT_SECRET"] else {
        panic!("JWT_SECRET is a !Sub dynamic reference")
    };
    assert!(string(&sub.value).starts_with("{{resolve:secretsmanager:${JwtSigningSecret}"));
    let lifecycle = lifecycle_rules();
    assert!(lifecycle.contains(&(r::UPLOADS_PREFIX, r::UPLOADS_EXPIRATION_DAYS)));
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    for name in ["MAX_JOBS_IN_FLIGHT", "MAX_JOBS_PER_MINUTE"] {
        assert!(
            !globals[name].is_null(),
            "quotas apply to the API and ingest: {name}"
        );
    }
}

#[test]
fn processor_can_poll_providers_and_keys_stay_out_of_the_template() {
    let t = template();
    let processor = resource(&t, "ProcessorFunction");
    let env = &processor["Environment"]["Variables"];
    for name in [
        "STABILITY_API_KEY",
        "POLL_DELAY_SECONDS",
        "PROVIDER_DEADLINE_SECONDS",
    ] {
        assert!(!env[name].is_null(), "processor needs {name}");
    }
    // Poll messages go back onto the jobs queue.
    let sends_to_jobs_queue =
        processor["Policies"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| match &p["SQSSendMessagePolicy"]["QueueName"] {
                Value::Tagged(q) => string(&q.value) == "JobsQueue.QueueName",
                _ => false,
            });
    assert!(sends_to_jobs_queue, "processor may send poll messages");
    // The key is an SSM parameter *name*; the value never appears here.
    let key = &t["Parameters"]["StabilityApiKey"];
    assert_eq!(string(&key["Type"]), "AWS::SSM::Parameter::Value<String>");
    assert!(string(&key["Default"]).starts_with('/'));
}

#[test]
fn processor_gets_the_notification_settings_and_may_send_only_from_the_sender() {
    let t = template();
    let processor = resource(&t, "ProcessorFunction");
    let env = &processor["Environment"]["Variables"];
    for name in shared::config::NotifySettings::ENV_VARS {
        assert!(!env[*name].is_null(), "processor needs {name}");
    }
    let Value::Tagged(from) = &env["NOTIFY_FROM_EMAIL"] else {
        panic!("NOTIFY_FROM_EMAIL is a !Ref")
    };
    assert_eq!(string(&from.value), "NotifyFromEmail");
    // Empty by default: e-mail is off until an operator names a verified sender.
    let param = &t["Parameters"]["NotifyFromEmail"];
    assert_eq!(string(&param["Type"]), "String");
    assert_eq!(string(&param["Default"]), "");
    // ses:SendEmail only when a sender is configured, and only as that sender.
    let policies = processor["Policies"].as_sequence().unwrap();
    let ses = policies
        .iter()
        .find_map(|p| match p {
            Value::Tagged(t) if t.tag == "!If" => Some(&t.value),
            _ => None,
        })
        .expect("an !If policy for e-mail");
    assert_eq!(string(&ses[0]), "EmailEnabled");
    let statement = &ses[1]["Statement"][0];
    assert_eq!(string(&statement["Action"]), "ses:SendEmail");
    let Value::Tagged(sender) = &statement["Condition"]["StringEquals"]["ses:FromAddress"] else {
        panic!("the FromAddress condition is a !Ref")
    };
    assert_eq!(string(&sender.value), "NotifyFromEmail");
    // Retries are notify messages on the jobs queue, which the processor may already send to
    // (checked above for polls); local provisioning verifies the same sender on the emulator
    // (imagejobs_local::provision::verify_email_identity, used by `imagejobs-local serve`).
}

// ---- the segmenter deployment (SegmenterDeployment: url | sagemaker) ----

const ON_SAGEMAKER: &str = "SegmenterOnSageMaker";

/// `v` as deployed with `SegmenterDeployment=sagemaker` (`on`) or `url`: each
/// `!If [SegmenterOnSageMaker, a, b]` becomes its branch and `!Ref AWS::NoValue` disappears from
/// maps and lists; other conditions are left as written. `None` when `v` itself disappears.
fn deployed(v: &Value, on: bool) -> Option<Value> {
    match v {
        Value::Tagged(t) if t.tag == "!If" && t.value[0].as_str() == Some(ON_SAGEMAKER) => {
            deployed(&t.value[if on { 1 } else { 2 }], on)
        }
        Value::Tagged(t) if t.tag == "!Ref" && t.value.as_str() == Some("AWS::NoValue") => None,
        Value::Mapping(m) => Some(Value::Mapping(
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), deployed(v, on)?)))
                .collect(),
        )),
        Value::Sequence(s) => Some(Value::Sequence(
            s.iter().filter_map(|v| deployed(v, on)).collect(),
        )),
        other => Some(other.clone()),
    }
}

/// The argument of the intrinsic `tag` (`!Ref`, `!GetAtt`, `!Sub`, …) that `v` must be.
fn intrinsic<'a>(v: &'a Value, tag: &str) -> &'a Value {
    match v {
        Value::Tagged(t) if t.tag == tag => &t.value,
        other => panic!("not {tag}: {other:?}"),
    }
}

/// The processor's policy statements as deployed.
fn processor_statements(t: &Value, on: bool) -> Vec<Value> {
    let policies = deployed(&resource(t, "ProcessorFunction")["Policies"], on).unwrap();
    policies
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|p| p["Statement"].as_sequence())
        .flatten()
        .cloned()
        .collect()
}

fn actions(statement: &Value) -> Vec<&str> {
    match &statement["Action"] {
        Value::String(a) => vec![a.as_str()],
        Value::Sequence(s) => s.iter().map(string).collect(),
        other => panic!("Action: {other:?}"),
    }
}

#[test]
fn segmenter_deployment_defaults_to_url_which_deploys_nothing_and_keeps_segmenter_url() {
    let t = template();
    let param = &t["Parameters"]["SegmenterDeployment"];
    // Existing stacks update without new parameters and nothing GPU-billed appears.
    assert_eq!(string(&param["Default"]), "url");
    let allowed: Vec<&str> = param["AllowedValues"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(string)
        .collect();
    assert_eq!(allowed, ["url", "sagemaker"]);
    // `deployed` relies on this being the one condition the choice drives.
    let condition = intrinsic(&t["Conditions"][ON_SAGEMAKER], "!Equals");
    assert_eq!(
        string(intrinsic(&condition[0], "!Ref")),
        "SegmenterDeployment"
    );
    assert_eq!(string(&condition[1]), "sagemaker");

    for function in ["ProcessorFunction", "ApiFunction"] {
        let env = deployed(&resource(&t, function)["Environment"]["Variables"], false).unwrap();
        assert_eq!(
            string(intrinsic(&env["SEGMENTER_URL"], "!Ref")),
            "SegmenterEndpointUrl",
            "{function}"
        );
        assert!(env["SEGMENTER_ENDPOINT_NAME"].is_null(), "{function}");
    }
    assert!(
        processor_statements(&t, false)
            .iter()
            .all(|s| actions(s).iter().all(|a| !a.starts_with("sagemaker:"))),
        "no SageMaker permission without the endpoint"
    );
    // Every segmenter resource exists only with the sagemaker deployment.
    let resources = t["Resources"].as_mapping().unwrap();
    let segmenter: Vec<&str> = resources
        .iter()
        .filter(|(name, _)| string(name).starts_with("Segmenter"))
        .map(|(name, r)| {
            assert_eq!(
                r["Condition"].as_str(),
                Some(ON_SAGEMAKER),
                "{name:?} is conditional"
            );
            string(&r["Type"])
        })
        .collect();
    for kind in [
        "AWS::IAM::Role",
        "AWS::SageMaker::Model",
        "AWS::SageMaker::EndpointConfig",
        "AWS::SageMaker::Endpoint",
        "AWS::ApplicationAutoScaling::ScalableTarget",
        "AWS::ApplicationAutoScaling::ScalingPolicy",
    ] {
        assert!(segmenter.contains(&kind), "a Segmenter* {kind}");
    }
    for (name, r) in resources {
        let kind = string(&r["Type"]);
        if kind.starts_with("AWS::SageMaker::") || kind.starts_with("AWS::ApplicationAutoScaling") {
            assert!(string(name).starts_with("Segmenter"), "{name:?}");
        }
    }
    // The sagemaker deployment refuses to start without an image and weights.
    let rule = &t["Rules"]["SageMakerSegmenterNeedsImageAndWeights"];
    let when = intrinsic(&rule["RuleCondition"], "!Equals");
    assert_eq!(string(intrinsic(&when[0], "!Ref")), "SegmenterDeployment");
    assert_eq!(string(&when[1]), "sagemaker");
    let required: Vec<&str> = rule["Assertions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| {
            let not = intrinsic(&a["Assert"], "!Not");
            let equals = intrinsic(&not[0], "!Equals");
            assert_eq!(string(&equals[1]), "");
            string(intrinsic(&equals[0], "!Ref"))
        })
        .collect();
    assert_eq!(required, ["SegmenterImageTag", "SegmenterModelDataUrl"]);
}

#[test]
fn sagemaker_processor_may_invoke_that_endpoint_only() {
    let t = template();
    let env = deployed(
        &resource(&t, "ProcessorFunction")["Environment"]["Variables"],
        true,
    )
    .unwrap();
    assert_eq!(
        string(intrinsic(&env["SEGMENTER_ENDPOINT_NAME"], "!GetAtt")),
        "SegmenterEndpoint.EndpointName"
    );
    assert!(env["SEGMENTER_URL"].is_null(), "one segmenter, not two");
    let api = deployed(
        &resource(&t, "ApiFunction")["Environment"]["Variables"],
        true,
    )
    .unwrap();
    assert!(
        api["SEGMENTER_URL"].is_null(),
        "SageMaker health-checks the endpoint itself"
    );

    let sagemaker: Vec<Value> = processor_statements(&t, true)
        .into_iter()
        .filter(|s| actions(s).iter().any(|a| a.starts_with("sagemaker:")))
        .collect();
    assert_eq!(sagemaker.len(), 1, "{sagemaker:?}");
    assert_eq!(actions(&sagemaker[0]), ["sagemaker:InvokeEndpoint"]);
    assert_eq!(string(&sagemaker[0]["Effect"]), "Allow");
    // An endpoint's !Ref is its ARN: exactly this endpoint, no wildcard.
    assert_eq!(
        string(intrinsic(&sagemaker[0]["Resource"], "!Ref")),
        "SegmenterEndpoint"
    );
    assert_eq!(
        string(&t["Resources"]["SegmenterEndpoint"]["Type"]),
        "AWS::SageMaker::Endpoint"
    );
    let output = &t["Outputs"]["SegmenterEndpointName"];
    assert_eq!(output["Condition"].as_str(), Some(ON_SAGEMAKER));
    assert_eq!(
        string(intrinsic(&output["Value"], "!GetAtt")),
        "SegmenterEndpoint.EndpointName"
    );
}

#[test]
fn sagemaker_role_reads_exactly_the_weights_pulls_one_repository_and_logs_to_the_endpoint() {
    let t = template();
    let role = resource(&t, "SegmenterRole");
    let trust = &role["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(
        string(&trust["Principal"]["Service"]),
        "sagemaker.amazonaws.com"
    );
    assert_eq!(actions(trust), ["sts:AssumeRole"]);
    let model = resource(&t, "SegmenterModel");
    assert_eq!(
        string(intrinsic(&model["ExecutionRoleArn"], "!GetAtt")),
        "SegmenterRole.Arn"
    );
    let policies = role["Policies"].as_sequence().unwrap();
    assert_eq!(policies.len(), 1);
    let statements = policies[0]["PolicyDocument"]["Statement"]
        .as_sequence()
        .unwrap();
    let by_sid = |sid: &str| {
        statements
            .iter()
            .find(|s| s["Sid"].as_str() == Some(sid))
            .unwrap_or_else(|| panic!("statement {sid}"))
    };
    for s in statements {
        for a in actions(s) {
            assert!(!a.contains('*'), "no wildcard action: {a}");
        }
    }

    // S3: GetObject on the model.tar.gz object, built from the same bucket/key as the URL
    // the model loads, so the two cannot drift apart.
    let weights = by_sid("ModelDataRead");
    assert_eq!(actions(weights), ["s3:GetObject"]);
    let arn = intrinsic(&weights["Resource"], "!Sub");
    assert_eq!(
        string(&arn[0]),
        "arn:${AWS::Partition}:s3:::${BucketAndKey}"
    );
    let url = intrinsic(&model["PrimaryContainer"]["ModelDataUrl"], "!Sub");
    assert_eq!(string(&url[0]), "s3://${BucketAndKey}");
    assert_eq!(arn[1]["BucketAndKey"], url[1]["BucketAndKey"]);
    let select = intrinsic(&arn[1]["BucketAndKey"], "!Select");
    assert_eq!(num(&select[0]), 1);
    let split = intrinsic(&select[1], "!Split");
    assert_eq!(string(&split[0]), "s3://");
    assert_eq!(
        string(intrinsic(&split[1], "!Ref")),
        "SegmenterModelDataUrl"
    );
    let data_url = &t["Parameters"]["SegmenterModelDataUrl"];
    assert!(string(&data_url["AllowedPattern"]).contains("^s3://"));
    assert!(statements.iter().all(|s| {
        actions(s).iter().all(|a| !a.starts_with("s3:"))
            || s["Sid"].as_str() == Some("ModelDataRead")
    }));

    // ECR: the token (which has no resource) and pulls from the image's repository only.
    let token = by_sid("EcrToken");
    assert_eq!(actions(token), ["ecr:GetAuthorizationToken"]);
    assert_eq!(string(&token["Resource"]), "*");
    let pull = by_sid("EcrPull");
    let mut pulls = actions(pull);
    pulls.sort();
    assert_eq!(
        pulls,
        [
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer"
        ]
    );
    assert!(
        string(intrinsic(&pull["Resource"], "!Sub"))
            .ends_with(":repository/${SegmenterImageRepository}")
    );
    let image = string(intrinsic(&model["PrimaryContainer"]["Image"], "!Sub"));
    assert!(
        image.starts_with("${AWS::AccountId}.dkr.ecr.${AWS::Region}.")
            && image.contains("/${SegmenterImageRepository}:${SegmenterImageTag}"),
        "the image is in the repository the role may pull: {image}"
    );

    // Logs: the endpoint's own log group.
    let endpoint_name = string(intrinsic(
        &resource(&t, "SegmenterEndpoint")["EndpointName"],
        "!Sub",
    ));
    let logs = string(intrinsic(&by_sid("Logs")["Resource"], "!Sub"));
    assert!(
        logs.ends_with(&format!(
            ":log-group:/aws/sagemaker/Endpoints/{endpoint_name}:*"
        )),
        "{logs}"
    );
    let metrics = by_sid("Metrics");
    assert_eq!(actions(metrics), ["cloudwatch:PutMetricData"]);
    assert!(!metrics["Condition"]["StringLike"]["cloudwatch:namespace"].is_null());
    // Nothing else has a "*" resource.
    for s in statements {
        if s["Resource"].as_str() == Some("*") {
            assert!(
                ["EcrToken", "Metrics"].contains(&string(&s["Sid"])),
                "{s:?}"
            );
        }
    }
}

#[tokio::test]
async fn sagemaker_container_wiring_matches_the_container_contract() {
    let t = template();
    let model = resource(&t, "SegmenterModel");
    // Networking: the container needs no network (weights arrive in /opt/ml/model, requests
    // through SageMaker), and the processor reaches the endpoint through the SageMaker API.
    assert_eq!(model["EnableNetworkIsolation"], Value::Bool(true));
    assert!(model["VpcConfig"].is_null());
    assert!(resource(&t, "ProcessorFunction")["VpcConfig"].is_null());
    assert_eq!(string(&model["PrimaryContainer"]["Mode"]), "SingleModel");

    // The container settings the template sets go through the container's own parser, as
    // SageMaker starts it (`<image> serve`); SageMaker probes GET /ping and sends
    // POST /invocations on port 8080 (its container contract), so that must be the port.
    let env = model["PrimaryContainer"]["Environment"]
        .as_mapping()
        .unwrap();
    let mut args = vec!["segmenter".to_owned(), "serve".to_owned()];
    for (k, v) in env {
        let k = string(k);
        if k == "LOG_FORMAT" {
            assert_eq!(string(v), "json");
            continue;
        }
        args.push(format!("--{}", k.to_lowercase().replace('_', "-")));
        args.push(string(v).to_owned());
    }
    use clap::Parser;
    let config = imagejobs_segmenter::Config::try_parse_from(&args).unwrap();
    assert_eq!(config.port, 8080);
    assert!(
        config.host.is_unspecified(),
        "every interface in the container"
    );
    assert_eq!(config.model_dir, std::path::Path::new("/opt/ml/model"));
    assert!(config.use_cuda, "a GPU instance");
    assert!(
        !env.contains_key("DEFAULT_MODEL"),
        "the processor names the model; the container picks its best as default"
    );
    assert!(
        string(&t["Parameters"]["SegmenterInstanceType"]["Default"]).starts_with("ml.g"),
        "a GPU instance type"
    );

    // The health check SageMaker runs: GET /ping answers 200 once the models are loaded.
    let (base, _models) = crate::common::start_segmenter().await;
    let ping = reqwest::get(format!("{base}/ping")).await.unwrap();
    assert_eq!(ping.status(), 200);
    let body: serde_json::Value = ping.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let config = resource(&t, "SegmenterEndpointConfig");
    let variant = &config["ProductionVariants"][0];
    assert_eq!(
        string(intrinsic(&variant["ModelName"], "!GetAtt")),
        "SegmenterModel.ModelName"
    );
    assert_eq!(
        string(intrinsic(&variant["InstanceType"], "!Ref")),
        "SegmenterInstanceType"
    );
    assert_eq!(
        string(intrinsic(&variant["InitialInstanceCount"], "!Ref")),
        "SegmenterMinInstances"
    );
    // The host's driver must run the image's CUDA 12 (containers/segmenter/Dockerfile): an
    // explicit AMI, since ml.g5's default host has driver 470 (CUDA 11.4).
    assert_eq!(
        string(intrinsic(&variant["InferenceAmiVersion"], "!Ref")),
        "SegmenterInferenceAmiVersion"
    );
    let ami = string(&t["Parameters"]["SegmenterInferenceAmiVersion"]["Default"]);
    assert!(ami.contains("-gpu-"), "{ami}");
    let dockerfile =
        std::fs::read_to_string(workspace_root().join("containers/segmenter/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("ARG CUDA_IMAGE=nvidia/cuda:12."),
        "a CUDA 12 base image for SageMaker's drivers"
    );
    // SageMaker's ranges for both: 60–3600 s.
    for key in [
        "ContainerStartupHealthCheckTimeoutInSeconds",
        "ModelDataDownloadTimeoutInSeconds",
    ] {
        let s = num(&variant[key]);
        assert!((60..=3600).contains(&s), "{key} = {s}");
    }
    assert_eq!(
        string(intrinsic(
            &resource(&t, "SegmenterEndpoint")["EndpointConfigName"],
            "!GetAtt"
        )),
        "SegmenterEndpointConfig.EndpointConfigName"
    );
}

#[test]
fn sagemaker_autoscaling_tracks_invocations_per_instance_of_the_variant() {
    let t = template();
    let variant =
        string(&resource(&t, "SegmenterEndpointConfig")["ProductionVariants"][0]["VariantName"]);
    let target = resource(&t, "SegmenterScalableTarget");
    assert_eq!(string(&target["ServiceNamespace"]), "sagemaker");
    assert_eq!(
        string(&target["ScalableDimension"]),
        "sagemaker:variant:DesiredInstanceCount"
    );
    assert_eq!(
        string(intrinsic(&target["ResourceId"], "!Sub")),
        format!("endpoint/${{SegmenterEndpoint.EndpointName}}/variant/{variant}")
    );
    assert_eq!(
        string(intrinsic(&target["MinCapacity"], "!Ref")),
        "SegmenterMinInstances"
    );
    assert_eq!(
        string(intrinsic(&target["MaxCapacity"], "!Ref")),
        "SegmenterMaxInstances"
    );
    let min = &t["Parameters"]["SegmenterMinInstances"];
    assert!(
        num(&min["MinValue"]) >= 1,
        "a real-time variant cannot scale to zero"
    );
    let policy = resource(&t, "SegmenterScalingPolicy");
    assert_eq!(string(&policy["PolicyType"]), "TargetTrackingScaling");
    assert_eq!(
        string(intrinsic(&policy["ScalingTargetId"], "!Ref")),
        "SegmenterScalableTarget"
    );
    let tracking = &policy["TargetTrackingScalingPolicyConfiguration"];
    assert_eq!(
        string(&tracking["PredefinedMetricSpecification"]["PredefinedMetricType"]),
        "SageMakerVariantInvocationsPerInstance"
    );
    assert_eq!(
        string(intrinsic(&tracking["TargetValue"], "!Ref")),
        "SegmenterInvocationsPerInstance"
    );
}

#[test]
fn segmenter_calls_give_up_before_the_processor_and_within_sagemakers_limit() {
    // SageMaker ends a real-time invocation after 60 s (InvokeEndpoint API reference).
    const SAGEMAKER_INVOCATION_LIMIT_SECONDS: u64 = 60;
    let t = template();
    let processor = resource(&t, "ProcessorFunction");
    let function_timeout = num(&processor["Timeout"]);
    assert_eq!(function_timeout, u64::from(r::PROCESSOR_TIMEOUT_SECONDS));
    for on in [false, true] {
        let env = deployed(&processor["Environment"]["Variables"], on).unwrap();
        let segmenter = num(&env["SEGMENTER_TIMEOUT_SECONDS"]);
        assert!(
            segmenter < function_timeout,
            "the call ({segmenter} s) must end before the function ({function_timeout} s)"
        );
        assert!(segmenter <= SAGEMAKER_INVOCATION_LIMIT_SECONDS);
    }
    // The code's default, used when the variable is unset, obeys the same chain.
    let default = shared::config::Settings::new("t", "q", "b")
        .segmenter
        .timeout;
    assert!(default.as_secs() < function_timeout);
}

#[test]
fn the_sweeper_runs_every_minute_and_deadlines_nest() {
    let t = template();
    let sweeper = resource(&t, "SweeperFunction");
    assert_eq!(
        string(&t["Resources"]["SweeperFunction"]["Metadata"]["BuildProperties"]["Binary"]),
        "imagejobs-sweeper"
    );
    let schedule = &sweeper["Events"]["EveryMinute"];
    assert_eq!(string(&schedule["Type"]), "ScheduleV2");
    assert_eq!(
        string(&schedule["Properties"]["ScheduleExpression"]),
        "rate(1 minute)"
    );
    // Its passes (0 s, 20 s, 40 s) fit in its timeout.
    let passes = u64::from(imagejobs_processor::sweeper::SWEEP_PASSES - 1)
        * imagejobs_processor::sweeper::SWEEP_INTERVAL.as_secs();
    assert!(passes < num(&sweeper["Timeout"]), "{passes} s of passes");
    let policies = serde_yaml_ng::to_string(&sweeper["Policies"]).unwrap();
    assert!(policies.contains("/index/pending"), "{policies}");
    assert!(policies.contains("SQSSendMessagePolicy"), "{policies}");

    // Deadlines nest: record deadline < Lambda timeout < visibility timeout.
    let processor = resource(&t, "ProcessorFunction");
    let timeout = num(&processor["Timeout"]);
    assert_eq!(timeout, u64::from(r::PROCESSOR_TIMEOUT_SECONDS));
    let visibility = num(&resource(&t, "JobsQueue")["VisibilityTimeout"]);
    assert!(
        u64::from(r::RECORD_DEADLINE_SECONDS) < timeout && timeout < visibility,
        "record deadline {} < timeout {timeout} < visibility {visibility}",
        r::RECORD_DEADLINE_SECONDS
    );
    // The lease is renewed every third of it while a record runs, so it may be shorter than
    // the Lambda timeout; what it must allow is the 2-minute recovery of a crashed job: the
    // lease, a sweeper pass to find it, and the takeover retry (to the next pass after it)
    // should that `run` be lost too, with time left for the job itself.
    let lease = num(&processor["Environment"]["Variables"]["LEASE_SECONDS"]);
    assert_eq!(lease, u64::from(r::LEASE_SECONDS));
    let pass = imagejobs_processor::sweeper::SWEEP_INTERVAL.as_secs();
    let retry = shared::recovery::TAKEOVER_RETRY_AFTER
        .as_secs()
        .div_ceil(pass)
        * pass;
    let takeover = lease + pass + retry;
    assert!(
        takeover <= 90,
        "a crashed job runs again {takeover} s after the crash"
    );
    assert!(lease >= 3, "renewed every {} s", lease / 3);
    for call in [
        "SEGMENTER_TIMEOUT_SECONDS",
        "STABILITY_TIMEOUT_SECONDS",
        "FAL_TIMEOUT_SECONDS",
    ] {
        let seconds = num(&processor["Environment"]["Variables"][call]);
        assert!(
            seconds < u64::from(r::RECORD_DEADLINE_SECONDS),
            "{call} = {seconds} s must sit below the record deadline"
        );
    }
}

// ---- operations: log groups, metrics, alarms (docs/ARCHITECTURE.md, Operations) ----

/// The names of the template's resources of `kind`.
fn resources_of<'a>(t: &'a Value, kind: &str) -> Vec<&'a str> {
    t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(name, _)| string(name))
        .collect()
}

#[test]
fn every_function_logs_to_its_own_group_kept_for_the_retention_parameter() {
    let t = template();
    let functions = resources_of(&t, "AWS::Serverless::Function");
    assert_eq!(
        functions,
        [
            "ApiFunction",
            "ProcessorFunction",
            "SweeperFunction",
            "IngestFunction"
        ]
    );
    let retention = &t["Parameters"]["LogRetentionDays"];
    assert_eq!(num(&retention["Default"]), 30);
    let allowed: Vec<u64> = retention["AllowedValues"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(num)
        .collect();
    assert!(
        allowed.contains(&30) && allowed.contains(&365),
        "{allowed:?}"
    );
    let mut names = Vec::new();
    for function in functions {
        let group_name = string(intrinsic(
            &resource(&t, function)["LoggingConfig"]["LogGroup"],
            "!Ref",
        ));
        let group = &t["Resources"][group_name];
        assert_eq!(
            string(&group["Type"]),
            "AWS::Logs::LogGroup",
            "{function} logs to {group_name}"
        );
        assert!(
            group["Condition"].is_null(),
            "{group_name} exists in every deployment"
        );
        let props = &group["Properties"];
        assert_eq!(
            string(intrinsic(&props["RetentionInDays"], "!Ref")),
            "LogRetentionDays",
            "{group_name}"
        );
        let name = string(intrinsic(&props["LogGroupName"], "!Sub"));
        assert!(name.starts_with("/aws/lambda/${AWS::StackName}-"), "{name}");
        names.push(name);
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 4, "one group per function: {names:?}");
    // Nothing else keeps logs without a retention.
    for group in resources_of(&t, "AWS::Logs::LogGroup") {
        assert!(
            !t["Resources"][group]["Properties"]["RetentionInDays"].is_null(),
            "{group}"
        );
    }
}

#[test]
fn the_processor_gets_the_metrics_namespace_the_settings_default_to() {
    let t = template();
    let env = &resource(&t, "ProcessorFunction")["Environment"]["Variables"];
    assert_eq!(
        string(intrinsic(&env["METRICS_NAMESPACE"], "!Ref")),
        "MetricsNamespace"
    );
    assert_eq!(
        string(&t["Parameters"]["MetricsNamespace"]["Default"]),
        shared::config::ObservabilitySettings::DEFAULT_NAMESPACE
    );
}

/// An alarm's single metric as `(namespace, metric, statistic, [(dimension, value)])`.
fn alarm_metric(alarm: &Value) -> (&str, &str, &str, Vec<(&str, &Value)>) {
    let dims = alarm["Dimensions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|d| (string(&d["Name"]), &d["Value"]))
        .collect();
    (
        string(&alarm["Namespace"]),
        string(&alarm["MetricName"]),
        string(&alarm["Statistic"]),
        dims,
    )
}

#[test]
fn alarms_watch_the_dead_letter_queue_processor_errors_and_the_api_5xx_rate() {
    let t = template();
    let mut alarms = resources_of(&t, "AWS::CloudWatch::Alarm");
    alarms.sort_unstable();
    assert_eq!(
        alarms,
        [
            "Api5xxRateAlarm",
            "DeadLetterQueueAlarm",
            "ProcessorErrorsAlarm"
        ],
        "each alarm is checked below"
    );

    // Dead-letter queue depth: any message that stays 5 minutes.
    let dlq = resource(&t, "DeadLetterQueueAlarm");
    let (namespace, metric, stat, dims) = alarm_metric(dlq);
    assert_eq!(
        (namespace, metric, stat),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum")
    );
    assert_eq!(dims.len(), 1);
    assert_eq!(dims[0].0, "QueueName");
    assert_eq!(
        string(intrinsic(dims[0].1, "!GetAtt")),
        "JobsDeadLetterQueue.QueueName"
    );
    assert_eq!(
        (
            num(&dlq["Threshold"]),
            string(&dlq["ComparisonOperator"]),
            num(&dlq["Period"])
        ),
        (1, "GreaterThanOrEqualToThreshold", 300)
    );

    // Processor invocation errors (crashes, timeouts), not failed records.
    let errors = resource(&t, "ProcessorErrorsAlarm");
    let (namespace, metric, stat, dims) = alarm_metric(errors);
    assert_eq!((namespace, metric, stat), ("AWS/Lambda", "Errors", "Sum"));
    assert_eq!(dims.len(), 1);
    assert_eq!(dims[0].0, "FunctionName");
    assert_eq!(string(intrinsic(dims[0].1, "!Ref")), "ProcessorFunction");
    assert_eq!(
        (
            num(&errors["Threshold"]),
            string(&errors["ComparisonOperator"])
        ),
        (1, "GreaterThanOrEqualToThreshold")
    );

    // The API's 5xx rate: 5xx / Count of this stack's HTTP API, in percent.
    let api = resource(&t, "Api5xxRateAlarm");
    assert!(api["MetricName"].is_null(), "a metric-math alarm");
    let queries = api["Metrics"].as_sequence().unwrap();
    let query = |id: &str| {
        queries
            .iter()
            .find(|q| string(&q["Id"]) == id)
            .unwrap_or_else(|| panic!("no query {id}"))
    };
    for (id, metric_name) in [("errors", "5xx"), ("requests", "Count")] {
        let q = query(id);
        assert_eq!(q["ReturnData"], Value::Bool(false));
        let m = &q["MetricStat"]["Metric"];
        assert_eq!(
            (string(&m["Namespace"]), string(&m["MetricName"])),
            ("AWS/ApiGateway", metric_name)
        );
        let dims = m["Dimensions"].as_sequence().unwrap();
        assert_eq!(dims.len(), 1);
        assert_eq!(string(&dims[0]["Name"]), "ApiId");
        assert_eq!(string(intrinsic(&dims[0]["Value"], "!Ref")), "HttpApi");
        assert_eq!(string(&q["MetricStat"]["Stat"]), "Sum");
        assert_eq!(num(&q["MetricStat"]["Period"]), 300);
    }
    let rate = query("rate");
    assert_eq!(rate["ReturnData"], Value::Bool(true));
    let expression = string(&rate["Expression"]);
    assert!(
        expression.contains("100 * FILL(errors, 0) / requests"),
        "{expression}"
    );
    assert!(
        expression.contains("requests >= 20"),
        "a minimum volume: {expression}"
    );
    assert_eq!(
        (
            num(&api["Threshold"]),
            string(&api["ComparisonOperator"]),
            num(&api["EvaluationPeriods"])
        ),
        (5, "GreaterThanThreshold", 2)
    );
    // The API's routes are all on that HTTP API.
    for event in resource(&t, "ApiFunction")["Events"]
        .as_mapping()
        .unwrap()
        .values()
    {
        assert_eq!(
            string(intrinsic(&event["Properties"]["ApiId"], "!Ref")),
            "HttpApi"
        );
    }

    // Every alarm notifies the one target, when there is one.
    for name in &alarms {
        let alarm = resource(&t, name);
        assert_eq!(string(&alarm["TreatMissingData"]), "notBreaching", "{name}");
        for actions in ["AlarmActions", "OKActions"] {
            let choice = intrinsic(&alarm[actions], "!If");
            assert_eq!(string(&choice[0]), "AlarmsNotify", "{name}.{actions}");
            assert_eq!(
                string(intrinsic(&choice[2], "!Ref")),
                "AWS::NoValue",
                "{name}.{actions}: no target, no action"
            );
            let target = intrinsic(&choice[1][0], "!If");
            assert_eq!(string(&target[0]), "AlarmsToExistingTopic");
            assert_eq!(string(intrinsic(&target[1], "!Ref")), "AlarmNotification");
            assert_eq!(string(intrinsic(&target[2], "!Ref")), "AlarmTopic");
        }
    }
    // The topic exists only for an e-mail address, and mails it.
    let param = &t["Parameters"]["AlarmNotification"];
    assert_eq!(string(&param["Default"]), "", "no actions unless asked");
    let topic = &t["Resources"]["AlarmTopic"];
    assert_eq!(string(&topic["Type"]), "AWS::SNS::Topic");
    assert_eq!(string(&topic["Condition"]), "AlarmsToNewTopic");
    let subscription = &topic["Properties"]["Subscription"][0];
    assert_eq!(string(&subscription["Protocol"]), "email");
    assert_eq!(
        string(intrinsic(&subscription["Endpoint"], "!Ref")),
        "AlarmNotification"
    );
    // An ARN is told from an address by its first ':'-separated field.
    let conditions = &t["Conditions"];
    let existing = intrinsic(&conditions["AlarmsToExistingTopic"], "!Equals");
    assert_eq!(string(&existing[1]), "arn");
    let select = intrinsic(&existing[0], "!Select");
    assert_eq!(num(&select[0]), 0);
    let split = intrinsic(&select[1], "!Split");
    assert_eq!(string(&split[0]), ":");
    assert_eq!(string(intrinsic(&split[1], "!Ref")), "AlarmNotification");
}

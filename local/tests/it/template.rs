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
    for def in table["AttributeDefinitions"].as_sequence().unwrap() {
        assert_eq!(string(&def["AttributeType"]), "S");
    }
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

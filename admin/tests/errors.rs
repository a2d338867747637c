//! The admin CLI says what is wrong when it has no credentials or cannot reach DynamoDB.

use std::process::Command;

fn admin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagejobs-admin"));
    cmd.env_clear()
        .env("HOME", std::env::temp_dir())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("JOBS_TABLE", "imagejobs-jobs")
        .args(["keys", "create", "--owner", "you"]);
    cmd
}

fn closed_port_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn no_credentials_is_said_plainly() {
    let out = admin()
        .env("AWS_ENDPOINT_URL", closed_port_endpoint())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no AWS credentials found"), "{stderr}");
    assert!(stderr.contains("AWS_ACCESS_KEY_ID=testing"), "{stderr}");
}

#[test]
fn an_unreachable_endpoint_is_named() {
    let endpoint = closed_port_endpoint();
    let out = admin()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("dynamodb is unavailable"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "the cause: {stderr}");
    assert!(
        stderr.contains(&format!("AWS_ENDPOINT_URL={endpoint}")),
        "{stderr}"
    );
}

//! The AWS emulator (moto in server mode) as a child process, for tests and tools that want
//! their own: started on a free 127.0.0.1 port, killed by its PID when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server owned by this process.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    /// Its endpoint, e.g. `http://127.0.0.1:41234`.
    pub endpoint: String,
}

/// The workspace root (where `.venv` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("local/ sits in the workspace")
        .to_path_buf()
}

/// The `moto_server` executable: `MOTO_SERVER`, else the project venv's.
pub fn moto_server_path() -> PathBuf {
    std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/moto_server"))
}

/// How moto is started: `MOTO_SERVER` as given, else the venv's Python running
/// `scripts/moto_server.py`, which serialises moto's DynamoDB calls (its failed transactions
/// otherwise undo concurrent writes; the script says how).
fn moto_command() -> (PathBuf, Vec<String>) {
    match std::env::var_os("MOTO_SERVER") {
        Some(exe) => (PathBuf::from(exe), Vec::new()),
        None => (
            workspace_root().join(".venv/bin/python"),
            vec![
                workspace_root()
                    .join("scripts/moto_server.py")
                    .to_string_lossy()
                    .into_owned(),
            ],
        ),
    }
}

impl Emulator {
    /// Starts moto and waits until it answers (at most 30 s).
    ///
    /// # Errors
    /// A message saying how to install it when the executable is missing, or that it did not
    /// come up.
    pub fn start() -> Result<Self, String> {
        let exe = moto_server_path();
        let (program, launcher) = moto_command();
        if !exe.exists() || !program.exists() {
            return Err(format!(
                "{} not found: run `bash scripts/setup.sh` first (or set MOTO_SERVER)",
                exe.display()
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new(&program)
            .args(&launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", exe.display()))?;
        let emulator = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(emulator);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("moto did not listen on port {port} within 30 s"))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SDK configuration pointing at `endpoint` with the emulator's dummy credentials.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "emulator",
        ))
        .load()
        .await
}

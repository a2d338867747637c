//! `imagejobs-admin keys create|list|revoke`: manages API keys in `JOBS_TABLE`, against real AWS
//! or, with `AWS_ENDPOINT_URL`, the emulator. A new key is printed once and never stored.
//! `imagejobs-admin webhooks show|set-url|rotate-secret --owner …`: an owner's webhook signing
//! secret and default URL (the same as `/v1/webhooks`).

use clap::{Parser, Subcommand};
use serde_json::json;
use std::process::ExitCode;
use time::OffsetDateTime;

use shared::adapters::{DynamoApiKeys, DynamoNotifications};
use shared::auth::{self, ApiKeyRecord};
use shared::core::ApiKeyStore;
use shared::job::OwnerId;
use shared::notification::{NotificationStore, WebhookSecret};

#[derive(Parser)]
#[command(
    version,
    about = "imagejobs administration (uses JOBS_TABLE and the AWS environment)"
)]
struct Cli {
    /// The jobs table.
    #[arg(long, env = "JOBS_TABLE")]
    table: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API keys.
    #[command(subcommand)]
    Keys(Keys),
    /// Owner webhook settings (signing secret, default URL).
    #[command(subcommand)]
    Webhooks(Webhooks),
}

#[derive(Subcommand)]
enum Webhooks {
    /// Print `{"owner", "default_url", "secret"}` (the secret is created when missing).
    Show {
        /// The owner.
        #[arg(long)]
        owner: String,
    },
    /// Set the default webhook URL (https), or remove it with `--url ''`.
    SetUrl {
        /// The owner.
        #[arg(long)]
        owner: String,
        /// The URL; empty removes it.
        #[arg(long)]
        url: String,
    },
    /// Replace the signing secret with a new random one and print it.
    RotateSecret {
        /// The owner.
        #[arg(long)]
        owner: String,
    },
}

async fn webhooks(store: &DynamoNotifications, command: Webhooks) -> Result<(), String> {
    let (owner, secret): (OwnerId, WebhookSecret) = match command {
        Webhooks::Show { owner } => {
            let owner = OwnerId::parse(&owner)?;
            let secret = store.webhook_secret(&owner).await;
            (owner, secret.map_err(store_error)?)
        }
        Webhooks::SetUrl { owner, url } => {
            let owner = OwnerId::parse(&owner)?;
            let url = match url.trim() {
                "" => None,
                given => Some(
                    shared::notification::validate_webhook_url(given, false, false)
                        .map_err(|e| e.to_string())?,
                ),
            };
            store
                .set_default_webhook_url(&owner, url.as_deref())
                .await
                .map_err(store_error)?;
            let secret = store.webhook_secret(&owner).await;
            (owner, secret.map_err(store_error)?)
        }
        Webhooks::RotateSecret { owner } => {
            let owner = OwnerId::parse(&owner)?;
            let secret = store.rotate_webhook_secret(&owner).await;
            (owner, secret.map_err(store_error)?)
        }
    };
    let settings = store
        .webhook_settings(&owner)
        .await
        .map_err(store_error)?
        .unwrap_or_default();
    println!(
        "{}",
        json!({"owner": owner, "default_url": settings.default_url, "secret": secret.as_str()})
    );
    Ok(())
}

#[derive(Subcommand)]
enum Keys {
    /// Create a key and print it (once) as JSON.
    Create {
        /// The owner the key acts for.
        #[arg(long)]
        owner: String,
        /// A label for people.
        #[arg(long, default_value = "default")]
        name: String,
        /// Comma-separated scopes: jobs:write, jobs:read, metrics:read, admin.
        #[arg(long, default_value = "jobs:write,jobs:read")]
        scopes: String,
    },
    /// List keys (never the keys themselves) as JSON lines.
    List {
        /// Only this owner's keys.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Revoke a key by its id (`key_…`).
    Revoke {
        /// The key id shown by `create` and `list`.
        key_id: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imagejobs-admin: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What to do when no credentials resolve; against the emulator any values are accepted.
const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY (or AWS_PROFILE); against the local emulator any values do, e.g. \
     AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing";

/// Fails early, saying which, when no credentials resolve (rather than a bare SDK error at the
/// first call).
async fn check_credentials(sdk: &aws_config::SdkConfig) -> Result<(), String> {
    use aws_sdk_dynamodb::config::ProvideCredentials;
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| NO_CREDENTIALS.to_owned())?;
    provider
        .provide_credentials()
        .await
        .map_err(|e| format!("{NO_CREDENTIALS} ({})", shared::error::chain(&e)))?;
    Ok(())
}

/// A store error, naming the endpoint for `dependency_unavailable` so an unreachable emulator
/// or a wrong region is obvious.
fn store_error(e: shared::Error) -> String {
    if e.code() != "dependency_unavailable" {
        return e.to_string();
    }
    let env = shared::env::Env::process();
    let target = match env.text("AWS_ENDPOINT_URL") {
        Some(url) => format!("the endpoint AWS_ENDPOINT_URL={url}"),
        None => format!(
            "AWS in region {}",
            env.text("AWS_REGION")
                .unwrap_or_else(|| "(AWS_REGION unset)".into())
        ),
    };
    format!("{e} (could not reach DynamoDB at {target}; is it running and is the table right?)")
}

async fn run(cli: Cli) -> Result<(), String> {
    let sdk = shared::adapters::aws_sdk_config()
        .await
        .map_err(|e| e.to_string())?;
    check_credentials(&sdk).await?;
    let notifications = DynamoNotifications::new(aws_sdk_dynamodb::Client::new(&sdk), &cli.table);
    let store = DynamoApiKeys::new(aws_sdk_dynamodb::Client::new(&sdk), cli.table);
    match cli.command {
        Command::Webhooks(command) => webhooks(&notifications, command).await,
        Command::Keys(Keys::Create {
            owner,
            name,
            scopes,
        }) => {
            let owner = OwnerId::parse(&owner)?;
            let scopes = auth::parse_scopes(&scopes)?;
            if scopes.is_empty() {
                return Err("give at least one scope".into());
            }
            let key = auth::generate_api_key()?;
            let record = ApiKeyRecord {
                key_id: key.key_id.clone(),
                hash: key.hash,
                owner,
                name,
                scopes,
                created_at: OffsetDateTime::now_utc(),
                last_used_at: None,
                revoked: false,
            };
            store.put_key(&record).await.map_err(store_error)?;
            println!(
                "{}",
                json!({"key": key.secret, "key_id": record.key_id, "owner": record.owner, "name": record.name, "scopes": record.scopes})
            );
            eprintln!("Store the key now: it is shown only once.");
            Ok(())
        }
        Command::Keys(Keys::List { owner }) => {
            let owner = owner.map(|o| OwnerId::parse(&o)).transpose()?;
            for k in store.list_keys(owner.as_ref()).await.map_err(store_error)? {
                println!(
                    "{}",
                    json!({"key_id": k.key_id, "owner": k.owner, "name": k.name, "scopes": k.scopes,
                           "created_at": k.created_at.unix_timestamp(), "last_used_at": k.last_used_at.map(|t| t.unix_timestamp()),
                           "revoked": k.revoked})
                );
            }
            Ok(())
        }
        Command::Keys(Keys::Revoke { key_id }) => {
            if store.revoke_key(&key_id).await.map_err(store_error)? {
                eprintln!("revoked {key_id}");
                Ok(())
            } else {
                Err(format!("no key {key_id}"))
            }
        }
    }
}

//! The composition root: the deployed API's [`AppState`], from the environment and the AWS SDK.
//! Only the binary calls it; tests and the local runner build [`AppState::new`] over their own
//! adapters.

use shared::adapters::Aws;
use shared::config::Settings;

use crate::state::AppState;

/// Reads settings and AWS configuration from the environment and builds the state over them.
///
/// # Errors
/// [`shared::Error::Config`] naming what is missing.
pub async fn from_env() -> shared::Result<AppState> {
    let settings = Settings::from_env()?;
    let aws = Aws::from_settings(&settings).await?;
    AppState::new(settings, &aws)
}

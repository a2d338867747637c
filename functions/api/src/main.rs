#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    let state = imagejobs_api::wiring::from_env().await?;
    lambda_http::run(imagejobs_api::router(state)).await
}

use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let sweeper = imagejobs_processor::sweeper::from_env().await?;
    lambda_runtime::run(service_fn(|_: LambdaEvent<serde_json::Value>| async {
        let report = imagejobs_processor::sweeper::run_passes(&sweeper).await?;
        Ok::<_, lambda_runtime::Error>(serde_json::to_value(report)?)
    }))
    .await
}

use aws_lambda_events::event::s3::S3Event;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let ingest = imagejobs_ingest::Ingest::from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<S3Event>| async {
        ingest
            .handle(event.payload)
            .await
            .map(|_| ())
            .map_err(lambda_runtime::Error::from)
    }))
    .await
}

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    let settings = shared::config::Settings::from_env()?;
    let metrics = imagejobs_processor::metrics::install(&settings.observability)?;
    let processor = imagejobs_processor::Processor::from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async {
        let response = processor.handle(event.payload).await;
        // Once per invocation, before Lambda may freeze the process: the batch's metrics as
        // EMF lines in this invocation's log stream.
        metrics.flush_to_stdout();
        Ok::<_, lambda_runtime::Error>(response)
    }))
    .await
}

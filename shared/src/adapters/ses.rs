//! Amazon SES v2 (`SendEmail`, simple content) as the [`EmailSender`].

use async_trait::async_trait;
use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::operation::send_email::SendEmailError;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};

use crate::notification::{EmailError, EmailSender};

/// Sends from one configured address (`NOTIFY_FROM_EMAIL`), which must be a verified SES
/// identity (or on a verified domain) that the function's role may send as.
#[derive(Debug, Clone)]
pub struct SesEmail {
    client: Client,
    from: String,
}

impl SesEmail {
    /// Wraps a client that sends as `from`.
    pub fn new(client: Client, from: impl Into<String>) -> Self {
        Self {
            client,
            from: from.into(),
        }
    }

    /// A client from the SDK configuration (`AWS_ENDPOINT_URL` reaches the emulator) sending
    /// as `from`.
    pub fn from_sdk_config(sdk: &aws_config::SdkConfig, from: impl Into<String>) -> Self {
        Self::new(Client::new(sdk), from)
    }
}

fn utf8(text: &str) -> Result<Content, EmailError> {
    Content::builder()
        .data(text)
        .charset("UTF-8")
        .build()
        .map_err(|e| EmailError::Rejected(e.to_string()))
}

/// Throttling, 5xx and transport failures are worth another try; refusals (unverified
/// identity, sandbox recipient, missing `ses:SendEmail` permission, suspended account) are
/// reported as [`EmailError::Rejected`], still retried by the caller's schedule because an
/// operator may fix them.
fn classify(e: SdkError<SendEmailError>) -> EmailError {
    let text = match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("SES error"),
                err.message().unwrap_or("no message")
            )
        }
        other => other.to_string(),
    };
    match e.into_service_error() {
        SendEmailError::TooManyRequestsException(_) | SendEmailError::LimitExceededException(_) => {
            EmailError::Unavailable(text)
        }
        SendEmailError::AccountSuspendedException(_)
        | SendEmailError::BadRequestException(_)
        | SendEmailError::MailFromDomainNotVerifiedException(_)
        | SendEmailError::MessageRejected(_)
        | SendEmailError::NotFoundException(_)
        | SendEmailError::SendingPausedException(_) => EmailError::Rejected(text),
        other if other.code().is_some_and(|c| c.contains("AccessDenied")) => {
            EmailError::Rejected(text)
        }
        _ => EmailError::Unavailable(text),
    }
}

#[async_trait]
impl EmailSender for SesEmail {
    fn sender(&self) -> &str {
        &self.from
    }

    async fn send(&self, to: &str, subject: &str, text: &str) -> Result<String, EmailError> {
        let message = Message::builder()
            .subject(utf8(subject)?)
            .body(Body::builder().text(utf8(text)?).build())
            .build();
        let out = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(to).build())
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            .map_err(classify)?;
        Ok(out.message_id.unwrap_or_default())
    }
}

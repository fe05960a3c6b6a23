//! The API's one error shape, `{"error":{"code","message"}}`, and how
//! axum's own rejections and the node's refusals become it.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use idlegrid_chain::Refused;
use serde::Serialize;
use utoipa::ToSchema;

use crate::limits::REQUEST_BODY_BYTES_MAX;

/// An error answer: an HTTP status and `{"error":{"code","message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The node could not answer (its state is unreadable or the engine is
    /// not answering); not the client's fault.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

/// Every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorView,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorView {
    /// What went wrong, in snake_case, for programs to match on
    /// (`malformed_json`, `not_found`, `insufficient_balance`, …).
    #[schema(example = "not_found")]
    code: &'static str,
    /// What went wrong, for people.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorView {
                code: self.code,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let message = rejection.body_text();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "payload_too_large",
                format!("the request body is over {REQUEST_BODY_BYTES_MAX} bytes"),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                "unsupported_media_type",
                "the request body must be JSON (content-type: application/json)",
            ),
            _ if status.is_server_error() => Self::unavailable(message),
            // Syntax errors (400) and JSON of the wrong shape (422) alike.
            _ => Self::bad_request("malformed_json", message),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        if rejection.status().is_server_error() {
            return Self::new(
                rejection.status(),
                "internal",
                format!("the route is misconfigured: {}", rejection.body_text()),
            );
        }
        Self::bad_request("malformed_path", rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("malformed_query", rejection.body_text())
    }
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Unavailable(_) => Self::unavailable(refused.to_string()),
            other => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                other.code(),
                other.to_string(),
            ),
        }
    }
}

pub(crate) fn ledger_unavailable(error: idlegrid_ledger::LedgerError) -> ApiError {
    ApiError::unavailable(format!("the ledger could not be read: {error}"))
}

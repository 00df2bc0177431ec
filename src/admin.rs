//! ferry's own HTTP listener (`admin: {listen: ...}`): the `sse_server` streams, and (issue 6)
//! health and metrics. Off unless configured.

/// HTTP routes a connection contributes to the admin listener.
pub type Routes = axum::Router;

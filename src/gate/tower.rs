//! The gate as a tower layer (feature `tower`): 503 with `Retry-After` while upgrading,
//! a 503 maintenance page while halted, the inner service when ready. Paths under the
//! admin prefixes always reach the inner service, so the admin page works while halted.
//!
//! ```ignore
//! let app = axum::Router::new()
//!     .route("/", get(home))
//!     .layer(upgrader::gate::tower::GateLayer::new(gate));
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{header, Request, Response, StatusCode};

use super::{Answer, Gate};

/// Wraps services with the gate.
///
/// Servers clone their service for every request; what the layer adds to that clone is
/// one plain reference: its state lives for the rest of the process (a layer is built
/// once per application), so requests on different cores never contend on a reference
/// count.
#[derive(Clone, Copy, Debug)]
pub struct GateLayer {
    shared: &'static Shared,
}

#[derive(Debug)]
struct Shared {
    gate: Gate,
    bypass: Vec<String>,
}

impl GateLayer {
    /// A layer answering from `gate`; paths under `/admin` pass through always.
    pub fn new(gate: Gate) -> GateLayer {
        GateLayer::with_bypass(gate, ["/admin"])
    }

    /// A layer whose given path prefixes pass through whatever the gate says.
    pub fn with_bypass(
        gate: Gate,
        prefixes: impl IntoIterator<Item = impl Into<String>>,
    ) -> GateLayer {
        GateLayer {
            shared: Box::leak(Box::new(Shared {
                gate,
                bypass: prefixes.into_iter().map(Into::into).collect(),
            })),
        }
    }
}

impl<S> tower_layer::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> GateService<S> {
        GateService {
            inner,
            shared: self.shared,
        }
    }
}

/// A service behind the gate.
#[derive(Clone, Debug)]
pub struct GateService<S> {
    inner: S,
    shared: &'static Shared,
}

pin_project_lite::pin_project! {
    /// The response future: the inner service's, or the gate's own answer.
    #[project = GateFutureProjection]
    #[allow(missing_docs)] // pin-project-lite takes no docs on variant fields

    pub enum GateFuture<F, B> {
        /// Served.
        Inner { #[pin] future: F },
        /// Answered by the gate.
        Gate { response: Option<Response<B>> },
    }
}

impl<F, B, E> Future for GateFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GateFutureProjection::Inner { future } => future.poll(cx),
            GateFutureProjection::Gate { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for GateService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<String>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = GateFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let answer = self.shared.gate.check();
        if answer == Answer::Ready
            || self
                .shared
                .bypass
                .iter()
                .any(|prefix| request.uri().path().starts_with(prefix.as_str()))
        {
            return GateFuture::Inner {
                future: self.inner.call(request),
            };
        }
        GateFuture::Gate {
            response: Some(unavailable(&answer)),
        }
    }
}

/// The 503 response for an answer other than ready.
pub fn unavailable<B: From<String>>(answer: &Answer) -> Response<B> {
    let (retry, title, text) = match answer {
        Answer::Upgrading { retry_after } => (
            retry_after.as_secs().max(1),
            "Upgrading",
            "This application is being upgraded and will be back in a moment.",
        ),
        // The reason is for operators (the admin page shows it), not for visitors.
        _ => (
            60,
            "Down for maintenance",
            "This application is down for maintenance. Its operators have been told.",
        ),
    };
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::RETRY_AFTER, retry.to_string())
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(B::from(page))
        .expect("a valid response")
}

//! Serving on a bound listener: shared by the binary and by other crates' tests that want a real
//! TCP dev forge in-process (bind `127.0.0.1:0`, read the port back, pass the listener here).

use std::future::Future;

use tokio::net::TcpListener;

use crate::{app, AppState};

/// Serves the dev forge on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve<F>(listener: TcpListener, state: AppState, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

//! The ceiling for the scoring benchmark: a bare axum endpoint that reads the request body
//! and answers a constant JSON body, on the same runtime `lambdaml serve` uses.
//!
//!     cargo run --release -p lambdaml-score --example bare_axum -- 127.0.0.1:18081

#![allow(clippy::print_stderr)]

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;

const BODY: &str = r#"{"model_name":"m","model_version":"v","id":"x","outputs":[{"name":"probabilities","datatype":"FP64","shape":[1,2],"data":[0.1,0.9]}]}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_string());
    let app = Router::new().route(
        "/v2/models/{model}/infer",
        post(|_body: Bytes| async { ([(header::CONTENT_TYPE, "application/json")], BODY) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bare axum on http://{addr}");
    axum::serve(listener, app).await
}

//! A real S3-compatible server for the end-to-end tests: `s3s-fs` (which
//! checks SigV4 signatures) on a loopback port, storing objects as files under
//! a root directory (`ROOT/BUCKET/KEY`). Each request is printed on stdout
//! as `METHOD PATH?QUERY` plus ` copy` for a server-side copy, so tests can
//! count uploads.
//!
//! Usage: `s3-test-server PORT ROOT ACCESS_KEY SECRET_KEY`

use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use s3s_fs::FileSystem;
use std::io::Write;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, root, access_key, secret_key] = args.as_slice() else {
        return Err("usage: s3-test-server PORT ROOT ACCESS_KEY SECRET_KEY".into());
    };
    let filesystem = FileSystem::new(root).map_err(|e| format!("{root}: {e:?}"))?;
    let mut builder = S3ServiceBuilder::new(filesystem);
    builder.set_auth(SimpleAuth::from_single(access_key.as_str(), secret_key.as_str()));
    let s3 = builder.build();
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
    println!("listening http://{}", listener.local_addr()?);
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = listener.accept().await?;
        let s3 = s3.clone();
        let logged = service_fn(move |request: hyper::Request<Incoming>| {
            let copy = if request.headers().contains_key("x-amz-copy-source") {
                " copy"
            } else {
                ""
            };
            let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{} {target}{copy}", request.method());
            let _ = out.flush();
            Service::call(&s3, request)
        });
        let connection = http.serve_connection(TokioIo::new(socket), logged).into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

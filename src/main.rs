//! The `ai-gateway` binary: parse flags, load settings, start the gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use ai_gateway::config::{read_config_file, Settings, Sources};
use ai_gateway::{app, logging};
use clap::Parser;

/// mimalloc rather than glibc's malloc: the request path allocates and frees many small buffers
/// across two or more worker threads, where glibc's arenas spent about a fifth of the gateway's
/// CPU (malloc, free, consolidation) in the profile of BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// GitLab AI Gateway, in Rust.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Start from the embedded development default: loopback, mock models, auth bypass,
    /// human-readable logs. Environment variables still override it.
    #[arg(long)]
    dev: bool,
    /// A TOML file with settings (the same tree as the AIGW_* variables).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Check the settings and exit (0 when valid, 2 otherwise).
    #[arg(long)]
    check_config: bool,
    /// Probe `GET /monitoring/healthz` of the gateway these settings describe and exit 0 when
    /// it answers 200 (for container HEALTHCHECKs, which then need no curl).
    #[arg(long)]
    healthcheck: bool,
}

/// Exit code for invalid settings.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let toml_text = match &cli.config {
        Some(path) => match read_config_file(path) {
            Ok(text) => Some(text),
            Err(e) => return bad_config(&e.to_string()),
        },
        None => None,
    };
    let path_text = cli.config.as_ref().map(|p| p.display().to_string());
    let sources = Sources {
        development: cli.dev,
        toml: match (&path_text, &toml_text) {
            (Some(p), Some(t)) => Some((p.as_str(), t.as_str())),
            _ => None,
        },
    };
    let settings = match Settings::load(&sources) {
        Ok(settings) => settings,
        Err(e) => return bad_config(&e.to_string()),
    };
    if cli.healthcheck {
        return healthcheck(&settings);
    }
    if cli.check_config {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let _log_guard = match logging::init(&settings) {
        Ok(guard) => guard,
        Err(e) => return bad_config(&format!("AIGW_LOGGING__TO_FILE: cannot open: {e}")),
    };
    actix_web::rt::System::new().block_on(app::run(settings))
}

/// A plain HTTP/1.1 GET of the health check on loopback.
fn healthcheck(settings: &Settings) -> ExitCode {
    use std::io::{Read, Write};
    use std::time::Duration;
    let host = match settings.fastapi.api_host.as_str() {
        "0.0.0.0" | "::" => "127.0.0.1",
        other => other,
    };
    let probe = || -> std::io::Result<bool> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, settings.fastapi.api_port))?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(
            b"GET /monitoring/healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    match probe() {
        Ok(true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn bad_config(message: &str) -> ExitCode {
    eprintln!("ai-gateway: configuration error: {message}");
    ExitCode::from(EXIT_BAD_CONFIG)
}

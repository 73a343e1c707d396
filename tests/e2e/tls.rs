//! TLS to the registry and to S3 behind a private CA (issue 10): with `registry.ca_file` and
//! `lake.ca_file` naming the CA the worker streams the fixture exactly; with another CA it
//! stops at once, exit code 1, saying which setting to fix, and applies nothing.
//!
//! The services here speak plain HTTP, so `tests/python/tls_proxy.py` fronts each with TLS
//! under a certificate signed by a CA made for the test (openssl).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cormorant::config::Config;
use tables::{DeleteMode, WriteMode};

use crate::support::*;

/// Two CAs and a `localhost` server certificate signed by the first.
pub struct Certs {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn make_certs(dir: &Path) -> Certs {
    std::fs::create_dir_all(dir).expect("cert dir");
    for ca in ["ca", "other-ca"] {
        let (key, pem, subj) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN=cormorant test {ca}"),
        );
        openssl(
            dir,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", &key, "-out", &pem, "-subj",
                &subj,
            ],
        );
    }
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    Certs {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// A TLS front (tests/python/tls_proxy.py) on a free port for the plain service at `target`
/// (`host:port` or a URL); killed when dropped.
struct Proxy {
    child: Child,
    port: u16,
}

impl Proxy {
    fn start(certs: &Certs, target: &str) -> Self {
        let target_port = target
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok());
        let target_port = target_port.expect("service address with a port");
        let port: u16 = free_address()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let python = std::env::var("CORMORANT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/tls_proxy.py");
        let mut child = Command::new(python)
            .arg(script)
            .args([&certs.cert, &certs.key])
            .args([port.to_string(), target_port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the TLS proxy");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("proxy stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("proxy ready");
        assert_eq!(line.trim(), "ready", "the TLS proxy did not start");
        Self { child, port }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `run --until-caught-up` as a process: exit status, stderr, seconds taken.
fn run_worker(cfg: &Config, tag: &str) -> (bool, String, f64) {
    let path = write_config(cfg, tag);
    let log = path.with_file_name(format!("{tag}.log"));
    let started = Instant::now();
    let mut child = spawn_worker(&path, &log, &["run", "--until-caught-up"], "warn");
    let status = wait_exit(&mut child, Duration::from_secs(180), tag, &log);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    (status.success(), text, started.elapsed().as_secs_f64())
}

fn tls_config(prefix: &str, tag: &str, registry: &Proxy, s3: &Proxy, ca: &Path) -> Config {
    let mut cfg = config(prefix, Storage::S3, DeleteMode::Hard, WriteMode::Mor, tag);
    cfg.registry.url = format!("https://localhost:{}", registry.port);
    cfg.registry.ca_file = Some(ca.to_path_buf());
    cfg.lake.storage_options.remove("AWS_ALLOW_HTTP");
    cfg.lake
        .storage_options
        .insert("AWS_ENDPOINT_URL".into(), format!("https://localhost:{}", s3.port));
    cfg.lake.ca_file = Some(ca.to_path_buf());
    cfg
}

#[tokio::test(flavor = "multi_thread")]
async fn private_ca_is_trusted_when_configured_and_refused_otherwise() {
    let loaded = full_fixture().await;
    let dir = std::env::temp_dir().join("cormorant-tests").join(unique("tls"));
    let certs = make_certs(&dir);
    let registry_tls = Proxy::start(&certs, &registry());
    let s3_tls = Proxy::start(&certs, &s3_endpoint());

    // the right CA for both: the fixture arrives exactly, read back over TLS too
    let cfg = tls_config(&loaded.prefix, "tls-ok", &registry_tls, &s3_tls, &certs.ca);
    let (ok, log, _) = run_worker(&cfg, "tls-ok");
    assert!(ok, "the worker with the right CA exits 0:\n{log}");
    assert_point(&cfg, "final", None, false).await;

    // another CA for S3: refused at once, naming lake.ca_file
    let mut cfg = tls_config(&loaded.prefix, "tls-bad-s3", &registry_tls, &s3_tls, &certs.ca);
    cfg.lake.ca_file = Some(certs.other_ca.clone());
    let (ok, log, took) = run_worker(&cfg, "tls-bad-s3");
    assert!(!ok, "a lake behind an untrusted certificate is refused");
    assert!(
        log.contains("lake.ca_file") && log.contains("UnknownIssuer"),
        "the error names the setting:\n{log}"
    );
    assert!(took < 30.0, "refused in {took:.1} s, not retried");

    // another CA for the registry: the worker stops, dead-letters nothing, commits nothing
    let mut cfg = tls_config(&loaded.prefix, "tls-bad-registry", &registry_tls, &s3_tls, &certs.ca);
    cfg.registry.ca_file = Some(certs.other_ca.clone());
    let (ok, log, took) = run_worker(&cfg, "tls-bad-registry");
    assert!(!ok, "a registry behind an untrusted certificate is refused");
    assert!(log.contains("registry.ca_file"), "the error names the setting:\n{log}");
    assert!(took < 30.0, "refused in {took:.1} s, not retried");
    let lake = cfg.lake.open().expect("lake");
    assert_eq!(
        lake.list_tables().await.expect("list"),
        Vec::<String>::new(),
        "nothing applied or dead-lettered"
    );

    // a CA file that is not a certificate is named before anything starts
    let mut cfg = tls_config(&loaded.prefix, "tls-not-pem", &registry_tls, &s3_tls, &certs.ca);
    cfg.lake.ca_file = Some(certs.key.with_file_name("ext"));
    let (ok, log, _) = run_worker(&cfg, "tls-not-pem");
    assert!(
        !ok && log.contains("lake.ca_file") && log.contains("no PEM certificate"),
        "{log}"
    );
}

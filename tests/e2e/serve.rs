//! `cormorant serve` with real clients: Debian's `psql` (CSV output compared cell by cell with
//! the fixture's PostgreSQL dumps, NULL and `""` told apart) and Python psycopg 3 (typed
//! values, prepared statements), a wrong password refused, read-only, new commits visible to
//! the next query, TLS required when configured.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

pub const PASSWORD: &str = "s3cret pass";
/// How psql is told to print NULL (`\pset null`), so it differs from an empty string.
const NULL_MARK: &str = "<<NULL>>";

/// A `cormorant serve` process, killed when dropped.
pub struct Server {
    child: Child,
    pub host: String,
    pub port: String,
}

impl Server {
    /// Starts `cormorant serve` for `config` and waits until it accepts connections.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Self {
        let addr = free_address();
        let log = config.with_file_name(format!("serve-{}.log", unique("s")));
        let mut cmd = cormorant_cmd(config, &["serve", "--listen", &addr]);
        cmd.env("CORMORANT_SERVE__PASSWORD", PASSWORD)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"));
        let mut child = cmd.spawn().expect("spawn cormorant serve");
        let started = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "cormorant serve exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "cormorant serve did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        Self {
            child,
            host: host.into(),
            port: port.into(),
        }
    }

    /// A libpq connection string for this server.
    pub fn dsn(&self, extra: &str) -> String {
        format!(
            "host={} port={} user=cormorant dbname=lake {extra}",
            self.host, self.port
        )
    }

    /// `psql --csv` with `args` (password from `PGPASSWORD`).
    pub fn psql(&self, password: &str, extra: &str, args: &[&str]) -> Output {
        Command::new("psql")
            .arg(self.dsn(extra))
            .args(["--csv", "-X", "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql (Debian's postgresql-client)")
    }

    /// Rows (header first) of `sql` through psql, timestamps as PostgreSQL prints them.
    /// psql's CSV prints NULL and an empty string alike (both an empty field) unless told how
    /// to show NULL, so NULL comes out as [`NULL_MARK`] and an empty field is `""`.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let null = format!("null={NULL_MARK}");
        let out = self.psql(PASSWORD, "sslmode=disable", &["-P", &null, "-c", sql]);
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_pg_csv(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|c| match c.as_deref() {
                        None => Some(String::new()),
                        Some(NULL_MARK) => None,
                        Some(s) => Some(pg_float(&pg_timestamp(s))),
                    })
                    .collect()
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// pgwire prints every timestamp with six fractional digits (`20:00:00.000000+00`); PostgreSQL
/// drops trailing zeros (`20:00:00+00`). Only that difference is normalized.
fn pg_timestamp(cell: &str) -> String {
    let bytes = cell.as_bytes();
    let looks_like = cell.len() >= 26
        && bytes.get(4) == Some(&b'-')
        && bytes.get(10) == Some(&b' ')
        && bytes.get(13) == Some(&b':')
        && bytes.get(19) == Some(&b'.');
    if !looks_like {
        return cell.to_string();
    }
    let (head, rest) = cell.split_at(20);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let zone = &rest[digits.len()..];
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        format!("{}{zone}", &head[..19])
    } else {
        format!("{head}{trimmed}{zone}")
    }
}

/// Runs `tests/python/serve_client.py` (psycopg 3) against `server`; it asserts on its own and
/// prints what it checked.
pub fn psycopg_checks(server: &Server, table: &str) {
    let python = std::env::var("CORMORANT_TEST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/cormorant/delta-py/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/serve_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(server.dsn("sslmode=disable"))
        .arg(table)
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("python with psycopg (scripts/python-reader installs it)");
    assert!(
        out.status.success(),
        "psycopg checks failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Wrong password, unknown user, writes, and TLS required when configured.
pub fn refusals(server: &Server, config: &Path) {
    for (password, extra) in [
        ("wrong", "sslmode=disable"),
        (PASSWORD, "sslmode=disable user=postgres"),
    ] {
        let out = server.psql(password, extra, &["-c", "SELECT 1"]);
        assert_eq!(out.status.code(), Some(2), "psql must fail to connect ({extra})");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("authentication failed") || err.contains("password"),
            "{err}"
        );
    }
    for sql in [
        "INSERT INTO customers (id) VALUES (1)",
        "DELETE FROM customers",
        "CREATE TABLE x (a int)",
        "DROP TABLE customers",
        "COPY (SELECT 1) TO '/tmp/cormorant-serve-copy'",
    ] {
        let out = server.psql(PASSWORD, "sslmode=disable", &["-c", sql]);
        assert!(!out.status.success(), "{sql} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("read-only"), "{sql}: {err}");
    }
    assert!(!Path::new("/tmp/cormorant-serve-copy").exists());

    // TLS configured: required, and verifiable
    let dir = config.with_file_name(unique("serve-certs"));
    let certs = crate::tls::make_certs(&dir);
    let (cert, key) = (certs.cert.to_str().expect("utf-8"), certs.key.to_str().expect("utf-8"));
    let tls = Server::start(
        config,
        &[("CORMORANT_SERVE__TLS_CERT", cert), ("CORMORANT_SERVE__TLS_KEY", key)],
    );
    let plain = tls.psql(PASSWORD, "sslmode=disable", &["-c", "SELECT 1"]);
    assert!(!plain.status.success(), "a plaintext client must be refused");
    assert!(String::from_utf8_lossy(&plain.stderr).contains("requires TLS"));
    let verify = format!("sslmode=verify-full sslrootcert={} host=localhost", certs.ca.display());
    let ok = tls.psql(PASSWORD, &verify, &["-c", "SELECT count(*) AS n FROM customers"]);
    assert!(
        ok.status.success(),
        "TLS client: {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // a key that does not exist stops the server: never plaintext
    let out = cormorant_cmd(config, &["serve", "--listen", &free_address()])
        .env("CORMORANT_SERVE__PASSWORD", PASSWORD)
        .env("CORMORANT_SERVE__TLS_CERT", cert)
        .env("CORMORANT_SERVE__TLS_KEY", "/nonexistent/key.pem")
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("serve.tls_key"));
    // no password: refuses to start, naming the setting
    let out = cormorant_cmd(config, &["serve", "--listen", &free_address()])
        .output()
        .expect("serve");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("serve.password"));
}

/// pgwire prints a whole float8 with ryu (`141.0`), PostgreSQL without the fraction (`141`);
/// typed clients get the same value. (The fixture's numerics have 2 or 4 decimals, so a cell
/// ending in exactly one `.0` is a float.)
fn pg_float(cell: &str) -> String {
    match cell.strip_suffix(".0") {
        Some(whole) if !whole.is_empty() && whole.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()) => {
            whole.to_string()
        }
        _ => cell.to_string(),
    }
}

#[test]
fn timestamps_lose_only_trailing_zeros() {
    assert_eq!(pg_float("141.0"), "141");
    assert_eq!(pg_float("-2.0"), "-2");
    assert_eq!(pg_float("141.50"), "141.50");
    assert_eq!(pg_float("1.0e5"), "1.0e5");
    assert_eq!(pg_timestamp("2026-11-21 20:00:00.000000+00"), "2026-11-21 20:00:00+00");
    assert_eq!(
        pg_timestamp("2026-11-21 20:00:00.120000+00"),
        "2026-11-21 20:00:00.12+00"
    );
    assert_eq!(pg_timestamp("2026-11-21 20:00:00.123456"), "2026-11-21 20:00:00.123456");
    assert_eq!(pg_timestamp("not a time"), "not a time");
}

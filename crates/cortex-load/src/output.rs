//! Per-request results streamed to a file by one writer thread, so a run of any
//! length needs constant memory. The formats are described in the module docs of
//! `load`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::config::{OutputFormat, Plan};
use super::error::{LoadError, Result};
use super::summary::{ErrorKind, Summary};

/// Batches of records in flight to the writer: bounded so a slow disk slows the run
/// down instead of filling memory.
const CHANNEL_BATCHES: usize = 256;

/// One finished request, as streamed to the writer. `Copy` and small: no allocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    pub(crate) scenario: u32,
    /// 0 when no answer came.
    pub(crate) status: u16,
    pub(crate) error: Option<ErrorKind>,
    pub(crate) duration_us: u64,
    pub(crate) bytes: u64,
    pub(crate) timestamp_ms: u64,
}

/// Per-scenario strings escaped once for the format.
#[derive(Debug)]
struct Names {
    endpoint: String,
    method: String,
}

/// The writer thread and the sending side of its channel.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Vec<Record>>,
    handle: tokio::task::JoinHandle<std::io::Result<BufWriter<File>>>,
    path: PathBuf,
    format: OutputFormat,
}

impl Writer {
    /// Create the file (failing before the run if it cannot be) and start the thread.
    pub(crate) fn start(path: &Path, format: OutputFormat, plan: &Plan) -> Result<Self> {
        let io_err = |source| LoadError::Output {
            path: path.to_owned(),
            source,
        };
        let mut out = BufWriter::with_capacity(256 * 1024, File::create(path).map_err(io_err)?);
        let names: Vec<Names> = plan
            .scenarios
            .iter()
            .map(|p| match format {
                OutputFormat::Csv => Names {
                    endpoint: csv_field(&p.endpoint),
                    method: csv_field(p.method.as_str()),
                },
                _ => Names {
                    endpoint: serde_json::to_string(&p.endpoint).unwrap_or_default(),
                    method: serde_json::to_string(p.method.as_str()).unwrap_or_default(),
                },
            })
            .collect();
        match format {
            OutputFormat::Csv => out.write_all(
                b"id,endpoint,method,status,duration_us,success,error,bytes,timestamp_ms\n",
            ),
            _ => out.write_all(b"{\"requests\":["),
        }
        .map_err(io_err)?;
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        // A blocking thread: file writes must not stall the runtime's workers.
        let handle = tokio::task::spawn_blocking(move || write_loop(out, rx, &names, format));
        Ok(Self {
            tx,
            handle,
            path: path.to_owned(),
            format,
        })
    }

    /// A sender for one user.
    pub(crate) fn sender(&self) -> mpsc::Sender<Vec<Record>> {
        self.tx.clone()
    }

    /// Wait for every record to be written, then write the summary.
    pub(crate) async fn finish(self, summary: &Summary) -> Result<()> {
        let io_err = |source| LoadError::Output {
            path: self.path.clone(),
            source,
        };
        drop(self.tx);
        let mut out = self
            .handle
            .await
            .map_err(|e| io_err(std::io::Error::other(e)))?
            .map_err(io_err)?;
        match self.format {
            OutputFormat::Csv => {
                out.flush().map_err(io_err)?;
                let sidecar = summary_path(&self.path);
                let json = serde_json::to_vec_pretty(summary).map_err(std::io::Error::other);
                json.and_then(|j| std::fs::write(&sidecar, j))
                    .map_err(|source| LoadError::Output {
                        path: sidecar,
                        source,
                    })?;
            }
            _ => {
                out.write_all(b"\n],\"summary\":").map_err(io_err)?;
                serde_json::to_writer(&mut out, summary)
                    .map_err(|e| io_err(std::io::Error::other(e)))?;
                out.write_all(b"}\n").map_err(io_err)?;
                out.flush().map_err(io_err)?;
            }
        }
        Ok(())
    }
}

/// `results.csv` -> `results.summary.json`.
pub fn summary_path(csv: &Path) -> PathBuf {
    csv.with_extension("summary.json")
}

fn write_loop(
    mut out: BufWriter<File>,
    mut rx: mpsc::Receiver<Vec<Record>>,
    names: &[Names],
    format: OutputFormat,
) -> std::io::Result<BufWriter<File>> {
    let mut id = 0u64;
    while let Some(batch) = rx.blocking_recv() {
        for r in batch {
            id += 1;
            let n = &names[r.scenario as usize];
            let success = r.error.is_none() && r.status < 400;
            match format {
                OutputFormat::Csv => {
                    write!(out, "{id},{},{},", n.endpoint, n.method)?;
                    if r.error.is_none() {
                        write!(out, "{}", r.status)?;
                    }
                    writeln!(
                        out,
                        ",{},{success},{},{},{}",
                        r.duration_us,
                        r.error.map_or("", ErrorKind::as_str),
                        r.bytes,
                        r.timestamp_ms
                    )?;
                }
                _ => {
                    if id > 1 {
                        out.write_all(b",")?;
                    }
                    write!(
                        out,
                        "\n{{\"id\":{id},\"endpoint\":{},\"method\":{},\"status\":",
                        n.endpoint, n.method
                    )?;
                    match r.error {
                        None => write!(out, "{}", r.status)?,
                        Some(_) => out.write_all(b"null")?,
                    }
                    write!(
                        out,
                        ",\"duration_us\":{},\"success\":{success},\"error\":",
                        r.duration_us
                    )?;
                    match r.error {
                        None => out.write_all(b"null")?,
                        Some(k) => write!(out, "\"{}\"", k.as_str())?,
                    }
                    write!(
                        out,
                        ",\"bytes\":{},\"timestamp_ms\":{}}}",
                        r.bytes, r.timestamp_ms
                    )?;
                }
            }
        }
    }
    Ok(out)
}

/// Quote a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

//! `portcullis audit …`: verify a file or a whole rotated trail, export and search records.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use clap::{Args, Subcommand};

use super::fail;
use crate::audit::export::{self, Filter, Format};
use crate::audit::files::{self, TrailFile};
use crate::audit::personal::PersonalKeys;
use crate::audit::{ChainVerifier, VerifyOptions};

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Verify the hash chain and checkpoint signatures of an audit file, of several files in
    /// order, or of a directory's whole trail (its rotated files oldest first, then the
    /// current one); report the first broken line or the missing file (exit 1).
    Verify {
        /// Audit files (plain or .gz) or a directory holding a trail.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Base64 Ed25519 public key that must have signed the checkpoints.
        #[arg(long)]
        key: Option<String>,
        /// Accept records after the last checkpoint (the log is still being written).
        #[arg(long)]
        open: bool,
        /// Accept a first file that continues an earlier one (after rotation).
        #[arg(long)]
        continuation: bool,
    },
    /// Write the records that match the filters, as JSON Lines (each line as written, hash
    /// included) or CSV (RFC 4180, formula-safe), reading rotated and compressed files.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// jsonl or csv.
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
    /// Erase a user from the trail (`audit.personal_data: pseudonymised`): asks the running
    /// Portcullis of `-c CONFIG` (its admin listener) to revoke their sessions and delete their
    /// key; the same as `portcullis admin forget`.
    Forget {
        /// The configuration of the running Portcullis (for its admin listener).
        #[arg(short, long)]
        config: PathBuf,
        /// The user id.
        #[arg(long)]
        user: String,
        /// An admin token with the `revoke` scope, as `env:NAME` or `file:PATH`.
        #[arg(long, default_value = "env:PORTCULLIS_ADMIN_TOKEN")]
        token: String,
    },
    /// The latest records that match the filters, as a table.
    Search {
        #[command(flatten)]
        filter: FilterArgs,
        /// How many of the latest matches to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, Args)]
pub(super) struct FilterArgs {
    /// Audit files (plain or .gz) or directories holding a trail.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// From this time (inclusive): 2026-12-01 or 2026-12-01T08:00:00Z.
    #[arg(long)]
    from: Option<String>,
    /// Until this time (exclusive).
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    entity: Option<String>,
    #[arg(long)]
    app: Option<String>,
    /// allow or deny.
    #[arg(long)]
    decision: Option<String>,
    /// A refusal reason, e.g. forbidden-role.
    #[arg(long)]
    reason: Option<String>,
    /// An event kind, e.g. access-denied, login-failed (checkpoints only when asked for).
    #[arg(long)]
    event: Option<String>,
    /// The personal-data key file (`audit.personal_keys`): shows and filters on the personal
    /// fields of users not forgotten.
    #[arg(long)]
    keys: Option<PathBuf>,
}

impl FilterArgs {
    fn filter(&self) -> Result<Filter, String> {
        let time = |t: &Option<String>| t.as_deref().map(export::parse_time).transpose();
        if let Some(decision) = self.decision.as_deref() {
            if decision != "allow" && decision != "deny" {
                return Err(format!("--decision {decision}: use allow or deny"));
            }
        }
        Ok(Filter {
            from: time(&self.from)?,
            to: time(&self.to)?,
            user: self.user.clone(),
            entity: self.entity.clone(),
            app: self.app.clone(),
            decision: self.decision.clone(),
            reason: self.reason.clone(),
            event: self.event.clone(),
        })
    }
}

pub(super) fn execute(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify {
            paths,
            key,
            open,
            continuation,
        } => verify(&paths, key.as_deref(), open, continuation),
        AuditCommand::Export { filter, format } => {
            let format = match format.as_str() {
                "jsonl" => Format::Jsonl,
                "csv" => Format::Csv,
                other => {
                    eprintln!("error: --format {other}: use jsonl or csv");
                    return ExitCode::from(2);
                }
            };
            let (files, filter, keys) = match inputs(&filter) {
                Ok(inputs) => inputs,
                Err(code) => return code,
            };
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            let result = export::export(&files, &filter, format, &mut out, keys.as_ref()).and_then(
                |counts| {
                    out.flush()?;
                    Ok(counts)
                },
            );
            match result {
                Ok(counts) => {
                    eprintln!("{} of {} records exported", counts.kept, counts.read);
                    ExitCode::SUCCESS
                }
                // A closed pipe (`| head`) is the reader's choice, not a failure.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        AuditCommand::Forget {
            config,
            user,
            token,
        } => match crate::config::Config::load(&config) {
            Ok(config) => {
                if config.audit.personal_keys.is_none() {
                    eprintln!("error: audit.personal_data is plain in this configuration: records name users in clear and cannot be made unreadable (docs/operations.md, Retention and erasure)");
                    return ExitCode::from(2);
                }
                let url = format!("http://{}", config.admin.listen);
                super::admin::forget(&url, &token, false, user)
            }
            Err(report) => {
                eprintln!("{report}");
                ExitCode::from(2)
            }
        },
        AuditCommand::Search { filter, limit } => {
            let (files, filter, keys) = match inputs(&filter) {
                Ok(inputs) => inputs,
                Err(code) => return code,
            };
            match export::search(&files, &filter, limit, keys.as_ref()) {
                Ok(rows) => {
                    for row in rows {
                        println!("{row}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

/// The files, the filter and the personal-data keys that export and search read.
type Inputs = (Vec<TrailFile>, Filter, Option<PersonalKeys>);

fn inputs(args: &FilterArgs) -> Result<Inputs, ExitCode> {
    let filter = args.filter().map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    let keys = args
        .keys
        .as_deref()
        .map(PersonalKeys::load)
        .transpose()
        .map_err(|e| fail(&format!("--keys: {e}")))?;
    let files = files::expand(&args.paths).map_err(|e| fail(&e))?;
    Ok((files, filter, keys))
}

fn verify(paths: &[PathBuf], key: Option<&str>, open: bool, continuation: bool) -> ExitCode {
    let key_bytes = match key.map(|k| base64::engine::general_purpose::STANDARD.decode(k.trim())) {
        Some(Ok(bytes)) if bytes.len() == 32 => Some(bytes),
        Some(_) => {
            eprintln!("error: --key must be a base64 Ed25519 public key (32 bytes)");
            return ExitCode::from(2);
        }
        None => None,
    };
    let files = match files::expand(paths) {
        Ok(files) => files,
        Err(e) => return fail(&e),
    };
    let mut verifier = ChainVerifier::new(VerifyOptions {
        trusted_key: key_bytes.as_deref(),
        allow_open_tail: open,
        allow_continuation: continuation,
    });
    let mut unclean = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let name = file.path.display();
        let reader = match files::reader(file) {
            Ok(reader) => reader,
            Err(e) => return fail(&format!("{name}: {e}")),
        };
        let before = verifier.unclean_shutdowns().len();
        for line in reader.lines() {
            let checked = match line {
                Ok(line) => verifier.line(&line),
                Err(e) => return fail(&format!("{name}: {e}")),
            };
            if let Err(e) = checked {
                eprintln!("{name}: {e}");
                return ExitCode::FAILURE;
            }
        }
        unclean.extend(
            verifier.unclean_shutdowns()[before..]
                .iter()
                .map(|line| format!("{name}:{line}")),
        );
        // Every file but the last must be sealed: rotation ends each with a checkpoint.
        if i + 1 < files.len() {
            if let Err(e) = verifier.end_file() {
                eprintln!("{name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let what = match files.as_slice() {
        [one] => one.path.display().to_string(),
        many => format!("{} files", many.len()),
    };
    match verifier.finish() {
        Ok(v) => {
            let pinned = if key_bytes.is_some() {
                "with the given key"
            } else {
                "self-consistent (pass --key to pin the signer)"
            };
            println!(
                "{what}: ok: {} records, {} checkpoint(s) {pinned}, {} unsealed at the end",
                v.records, v.checkpoints, v.unsealed_tail
            );
            for place in unclean {
                println!(
                    "{place}: unclean-shutdown: the process before this one ended without sealing the file (see the record for unsealed records and any torn bytes moved aside)"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let last = files.last().map(|f| f.path.display().to_string());
            eprintln!("{}: {e}", last.unwrap_or(what));
            ExitCode::FAILURE
        }
    }
}

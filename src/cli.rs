//! The command line. Exit codes: 0 success, 1 runtime failure or failed verification,
//! 2 configuration problems (`check`, and `run` refusing to start).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod admin;
mod audit;

use crate::config::Config;
use crate::{demo, keys, server};

const EXAMPLES: &str = "\
Examples:
  portcullis demo                                  # everything on https://127.0.0.1:8443
  portcullis check -c /etc/portcullis/portcullis.yaml
  portcullis run -c /etc/portcullis/portcullis.yaml
  portcullis keys generate > /etc/portcullis/keys.env
  portcullis keys assertion > /etc/portcullis/assertion.pem
  portcullis policy explain -c portcullis.yaml --app support --user-type external-user \
      --roles customer --entity acme --method POST --path /api/agents/billing-specialist/run
  echo 'a long passphrase' | portcullis hash-password
  portcullis keys dev-cert --out certs/dev --name chat.local
  portcullis audit verify /var/log/portcullis/ --key <base64 public key>   # the whole rotated trail
  portcullis audit export /var/log/portcullis/ --from 2026-12-01 --decision deny --format csv > denials.csv
  portcullis audit search /var/log/portcullis/ --user alice --limit 20";

/// Identity-aware reverse proxy: SSO in front of any web app, signed identity headers,
/// tamper-evident audit trail.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy with a configuration file.
    Run(RunArgs),
    /// Check a configuration file and print every problem (exit 2 if any).
    Check(ConfigArg),
    /// Run a self-contained demo on https://127.0.0.1:8443 with a sample chat app.
    Demo(DemoArgs),
    /// Audit trail tools.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Generate keys and development certificates.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Hash a password for a local user (Argon2id); reads the password from standard input.
    HashPassword,
    /// Access policy tools.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Call the admin API of a running proxy: list and revoke sessions, turn users,
    /// entities and apps off and on.
    Admin(admin::AdminArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Show the decision the proxy would make for a user and request, layer by layer
    /// (exit 0 allowed, 1 refused or login required, 2 configuration problems).
    Explain(Box<ExplainArgs>),
}

#[derive(Debug, Args)]
struct ExplainArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// App id (or give --host).
    #[arg(long)]
    app: Option<String>,
    /// Host the request is sent to (the app is routed as the proxy would).
    #[arg(long)]
    host: Option<String>,
    /// HTTP method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Path, optionally with a query (`/api/x?entity=acme`); normalised as the proxy does.
    #[arg(long)]
    path: String,
    /// No session: an anonymous request.
    #[arg(long, conflicts_with_all = ["user", "user_type", "roles", "entity", "mfa"])]
    anonymous: bool,
    /// User id.
    #[arg(long, default_value = "explain-user")]
    user: String,
    /// E-mail address.
    #[arg(long)]
    email: Option<String>,
    /// internal-user or external-user.
    #[arg(long, default_value = "external-user")]
    user_type: String,
    /// Roles (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// Entity (tenant).
    #[arg(long)]
    entity: Option<String>,
    /// Identity provider id (default: the first configured).
    #[arg(long)]
    idp: Option<String>,
    /// The session used a second factor.
    #[arg(long)]
    mfa: bool,
    /// Client address (IP allowlists refuse a request without one).
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// Configuration file (YAML).
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Take over the listening sockets of a running instance (zero-downtime upgrade); send
    /// SIGQUIT to the old process once this one waits.
    #[arg(short = 'u', long)]
    upgrade: bool,
    /// Run in the background (for systemd `Type=forking` with `PIDFile=`).
    #[arg(short = 'd', long)]
    daemon: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Directory for the demo's keys, certificate, config and audit log.
    #[arg(long, default_value = "portcullis-demo")]
    dir: PathBuf,
    /// HTTPS port on 127.0.0.1.
    #[arg(long, default_value_t = 8443)]
    port: u16,
    /// Plain-HTTP port on 127.0.0.1 (redirects to HTTPS).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Admin port on 127.0.0.1.
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print a new session key and audit signing key as environment assignments.
    Generate,
    /// Print a new assertion signing key (PKCS#8 PEM) for `assertion.signing_keys`.
    Assertion {
        /// ES256 (default) or EdDSA.
        #[arg(long, default_value = "ES256")]
        algorithm: String,
    },
    /// Print a new API key for a service account, and the hash to put in its `key_hashes`
    /// (the key is shown once and kept nowhere).
    ApiKey {
        /// Print `{"key": …, "key_hash": …}`.
        #[arg(long)]
        json: bool,
    },
    /// Make a development CA and a server certificate (never for production).
    DevCert {
        /// Output directory.
        #[arg(long, default_value = "certs/dev")]
        out: PathBuf,
        /// DNS names or IP addresses for the certificate.
        #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        names: Vec<String>,
    },
}

impl Cli {
    /// Runs the chosen command.
    pub fn execute(self) -> ExitCode {
        match self.command {
            Command::Run(args) => run(args),
            Command::Check(args) => check(&args),
            Command::Demo(args) => demo_command(args),
            Command::Audit(command) => audit::execute(command),
            Command::HashPassword => hash_password(),
            Command::Admin(args) => admin::admin(args),
            Command::Policy(PolicyCommand::Explain(args)) => explain(&args),
            Command::Keys(KeysCommand::Assertion { algorithm }) => {
                let algorithm = match algorithm.as_str() {
                    "ES256" => crate::config::AssertionAlgorithm::Es256,
                    "EdDSA" => crate::config::AssertionAlgorithm::EdDsa,
                    other => {
                        eprintln!("error: unknown algorithm {other}: use ES256 or EdDSA");
                        return ExitCode::from(2);
                    }
                };
                match crate::assertion::generate_pem(algorithm) {
                    Ok(pem) => {
                        print!("{pem}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                }
            }
            Command::Keys(KeysCommand::ApiKey { json }) => {
                let new = crate::apikey::generate();
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "key": new.key, "key_hash": new.hash })
                    );
                } else {
                    println!("# Give the key to the client; it is shown once and kept nowhere.");
                    println!("key:      {}", new.key);
                    println!("# Put the hash in service_accounts[].key_hashes.");
                    println!("key_hash: {}", new.hash);
                }
                ExitCode::SUCCESS
            }
            Command::Keys(KeysCommand::Generate) => match keys::generate_report() {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            },
            Command::Keys(KeysCommand::DevCert { out, names }) => {
                match keys::dev_certificate(&out, &names) {
                    Ok(paths) => {
                        println!("CA certificate:     {}\nserver certificate: {}\nserver key:         {}", paths.ca_cert.display(), paths.cert.display(), paths.key.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                }
            }
        }
    }
}

/// `policy explain`: the proxy's own decision function, with every layer's reason.
fn explain(args: &ExplainArgs) -> ExitCode {
    use crate::policy::{Decision, Verdict};
    let config = match Config::load(&args.config.config) {
        Ok(config) => config,
        Err(report) => {
            eprintln!("{report}");
            return ExitCode::from(2);
        }
    };
    let (raw_path, query) = match args.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (args.path.as_str(), None),
    };
    let path = match crate::route::normalize_path(raw_path) {
        Ok(path) => path,
        Err(_) => {
            println!("decision: deny (bad-request): the path is refused before any policy");
            return ExitCode::from(1);
        }
    };
    let router = crate::route::Router::new(&config.apps);
    let app = match (&args.app, &args.host) {
        (Some(id), _) => config.apps.iter().find(|a| a.id == *id),
        (None, Some(host)) => router.route(host, &path),
        (None, None) => {
            eprintln!("error: give --app ID or --host NAME");
            return ExitCode::from(2);
        }
    };
    let Some(app) = app.cloned() else {
        eprintln!(
            "error: no such app (ids: {})",
            config
                .apps
                .iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    };
    let user_type = match args.user_type.as_str() {
        "internal-user" => crate::config::UserType::Internal,
        "external-user" => crate::config::UserType::External,
        other => {
            eprintln!("error: unknown user type {other}: use internal-user or external-user");
            return ExitCode::from(2);
        }
    };
    let idp = args
        .idp
        .clone()
        .or_else(|| config.identity_providers.first().map(|p| p.id.clone()))
        .unwrap_or_default();
    let mut identity = crate::identity::Identity::imagined(
        &args.user,
        user_type,
        args.roles
            .iter()
            .filter(|r| !r.is_empty())
            .cloned()
            .collect(),
        args.entity.clone(),
        idp,
        args.mfa,
    );
    identity.email = args.email.clone();
    let request = crate::policy::Request {
        method: &args.method.to_ascii_uppercase(),
        path: &path,
        query,
        client_ip: args.ip,
    };
    let explanation =
        crate::policy::explain(&app, &request, (!args.anonymous).then_some(&identity));
    let (verdict, reason, status) = explanation.decision.answer();
    let code = u8::from(!matches!(explanation.decision, Decision::Allow(_)));
    if args.json {
        let body = serde_json::json!({
            "app": app.id, "method": request.method, "path": path,
            "decision": verdict, "reason": reason, "rule": explanation.rule,
            "steps": explanation.steps,
        });
        println!("{body:#}");
    } else {
        println!("app:      {}", app.id);
        println!(
            "request:  {} {path}{}",
            request.method,
            query.map(|q| format!("?{q}")).unwrap_or_default()
        );
        println!(
            "rule:     {}",
            explanation
                .rule
                .as_deref()
                .unwrap_or("(none: the app's access applies)")
        );
        println!("decision: {verdict} ({reason}) → {status}");
        for step in &explanation.steps {
            let mark = match step.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            };
            println!("  {mark}  {:<18} {}", step.layer, step.detail);
        }
    }
    ExitCode::from(code)
}

fn hash_password() -> ExitCode {
    use std::io::BufRead;
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("Password (input is echoed; pipe it in to avoid that):");
    }
    let mut line = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
        return fail(&e);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("error: empty password");
        return ExitCode::from(2);
    }
    match crate::idp::local::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}

fn check(args: &ConfigArg) -> ExitCode {
    // Built as `run` builds them: a key or certificate that cannot be used is found here.
    let metrics = match crate::metrics::Metrics::new() {
        Ok(metrics) => std::sync::Arc::new(metrics),
        Err(e) => return fail(&e),
    };
    let loaded = Config::load(&args.config)
        .and_then(|config| crate::runtime::Runtime::build(&config, &metrics).map(|_| config));
    match loaded {
        Ok(config) => {
            for warning in &config.warnings {
                println!("warning: {warning}");
            }
            println!("{}\n{}: ok", config.summary(), args.config.display());
            ExitCode::SUCCESS
        }
        Err(report) => {
            eprintln!("{report}");
            ExitCode::from(2)
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = match Config::load(&args.config.config) {
        Ok(config) => config,
        Err(report) => {
            eprintln!("{report}\nrefusing to start");
            return ExitCode::from(2);
        }
    };
    match server::run(
        config,
        server::RunOptions {
            upgrade: args.upgrade,
            daemon: args.daemon,
        },
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(server::StartError::Config(report)) => {
            eprintln!("{report}\nrefusing to start");
            ExitCode::from(2)
        }
        Err(e) => fail(&e),
    }
}

fn demo_command(args: DemoArgs) -> ExitCode {
    let options = demo::DemoOptions {
        dir: args.dir,
        port: args.port,
        http_port: args.http_port,
        admin_port: args.admin_port,
    };
    match demo::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

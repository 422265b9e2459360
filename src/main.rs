//! The `tollgate` command: argument parsing only; the work is in the library.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use tollgate::agents::ToolsFormat;
use tollgate::app;
use tollgate::telemetry::{self, LogFormat};

// Every request allocates a little (header maps, boxed futures, body
// frames): mimalloc's thread-local free lists make that cheaper than the
// system allocator's, measured in benches/load.sh.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Turn workflow endpoints into one governed API"
)]
struct Cli {
    /// Log format: `text`, or `json` (one object per line); also the access
    /// log's, unless the config's `access_log.format` chooses.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (default: tollgate.yaml, else config.example.yaml).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate a config; errors as FILE:LINE:COL: message, exit 1 on any.
    Check {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Print the OpenAPI 3.1 export of the governed API.
    Openapi {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// `json` or `yaml`.
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Print the agent tool definitions (operations marked `agent: true`).
    Tools {
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// `openai` (function calling) or `mcp` (the tools/list result).
        #[arg(long, value_enum, default_value_t = ToolsFormat::Openai)]
        format: ToolsFormat,
    },
    /// Turn an OpenAPI 3.0/3.1 spec into config YAML.
    Import {
        spec: PathBuf,
        #[arg(long)]
        upstream: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        base_path: Option<String>,
    },
    /// Run config.example.yaml with a built-in sample workflow upstream.
    Demo,
    /// Make a new API key and the config line that stores its hash.
    Key,
    /// Print the config's JSON Schema (for editors: yaml-language-server).
    Schema {
        /// The schema of a policy file named in `include:` instead.
        #[arg(long)]
        policy_file: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Check { config } => check(config.unwrap_or_else(app::default_config_path)),
        Command::Serve { config } => serve(config.unwrap_or_else(app::default_config_path)),
        Command::Demo => demo(),
        Command::Key => match app::new_key() {
            Ok(k) => {
                println!("key:    {}", k.key);
                println!("id:     {}", k.id);
                println!("config: - {{ id: {}, sha256: {} }}", k.id, k.sha256);
                println!("\nThe key is shown once; the config keeps only its SHA-256.");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Schema { policy_file } => {
            use tollgate::config::json_schema;
            let schema = if policy_file {
                json_schema::policy_file_schema()
            } else {
                json_schema::config_schema()
            };
            print!("{}", json_schema::to_text(&schema));
            ExitCode::SUCCESS
        }
        Command::Openapi { config, format } => {
            let path = config.unwrap_or_else(app::default_config_path);
            match tollgate::openapi::export_file(&path, &format) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    ExitCode::from(1)
                }
            }
        }
        Command::Tools { config, format } => {
            let path = config.unwrap_or_else(app::default_config_path);
            match load_or_report(&path) {
                Ok((gateway, _)) => {
                    let document = gateway.agents.document(format);
                    match serde_json::to_string_pretty(&document) {
                        Ok(text) => {
                            println!("{text}");
                            ExitCode::SUCCESS
                        }
                        Err(e) => fail(&e.to_string()),
                    }
                }
                Err(code) => code,
            }
        }
        Command::Import {
            spec,
            upstream,
            name,
            base_path,
        } => {
            let options = tollgate::openapi::ImportOptions {
                upstream,
                name,
                base_path,
            };
            match tollgate::openapi::import::import_file(&spec, &options) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("tollgate: {message}");
    ExitCode::from(2)
}

fn check(path: PathBuf) -> ExitCode {
    match app::load(&path) {
        Ok((gateway, _)) => {
            println!("{}: ok ({})", path.display(), gateway.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "{} error{}",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            ExitCode::from(1)
        }
    }
}

/// Loads and compiles `path`, or prints every error and gives exit code 1.
fn load_or_report(
    path: &std::path::Path,
) -> Result<(tollgate::gateway::Gateway, tollgate::gateway::Deps), ExitCode> {
    app::load(path).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        ExitCode::from(1)
    })
}

/// The control runtime: signals, reloads, the admin listener, the state
/// store's connection. Public traffic runs on the server's own worker
/// threads (server.rs), one runtime per core.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn serve(path: PathBuf) -> ExitCode {
    let (gateway, deps) = match load_or_report(&path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let result = runtime()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(app::serve(path, gateway, deps)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn demo() -> ExitCode {
    let path = PathBuf::from("config.example.yaml");
    let path = if path.exists() {
        path
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml")
    };
    let (gateway, deps) = match load_or_report(&path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let listen = gateway.settings.listen;
    let mcp_path = gateway.agents.endpoint().map(|e| e.path.clone());
    let result = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(async {
            let upstream = tollgate::demo::start_sample_upstream(([127, 0, 0, 1], 9090).into())
                .await
                .map_err(|e| format!("cannot start the sample upstream on 127.0.0.1:9090: {e}"))?;
            println!(
                "{}",
                tollgate::demo::banner(listen, upstream, mcp_path.as_deref())
            );
            app::serve(path, gateway, deps).await
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

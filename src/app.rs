//! What the commands do, as library functions (`main.rs` only parses
//! arguments): load and compile a config, serve it (public and admin
//! listeners, signals, and the reload triggers — SIGHUP, polling with
//! `reload: watch` — that call `crate::reload`), and make API keys.

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::net::SocketAddr;
use tokio::sync::watch;

use crate::admin::AdminServer;
use crate::clock::SystemClock;
use crate::config::schema::ReloadMode;
use crate::config::{self, ConfigError};
use crate::gateway::{Deps, Gateway};
use crate::reload::Reloader;
use crate::server::{Server, SharedGateway};

/// `tollgate.yaml` if it exists, else `config.example.yaml`.
pub fn default_config_path() -> PathBuf {
    let own = PathBuf::from("tollgate.yaml");
    if own.exists() {
        own
    } else {
        PathBuf::from("config.example.yaml")
    }
}

/// Loads and compiles a config file with fresh dependencies.
pub fn load(path: &Path) -> Result<(Gateway, Deps), Vec<ConfigError>> {
    let mut reading = config::read_file(path);
    let Some(loaded) = &reading.loaded else {
        return Err(reading.errors);
    };
    let deps = match Deps::for_config(loaded, SystemClock::shared()) {
        Ok(deps) => deps,
        Err(errors) => {
            reading.add_later(errors);
            return Err(reading.errors);
        }
    };
    let gateway = Gateway::compile_all(reading, &deps)?;
    Ok((gateway, deps))
}

/// The gateway's listeners running in the background.
pub struct Running {
    /// The public listener's address.
    pub addr: SocketAddr,
    /// The admin listener's address, when `admin.listen` is set.
    pub admin_addr: Option<SocketAddr>,
    /// Reloads the config into the running gateway (what SIGHUP and `POST /admin/reload` call).
    pub reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting on both listeners and drains in-flight requests.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds the public listener and (when configured) the admin listener,
/// and starts serving `gateway` with `reload: watch` polling; `path` is
/// what reloads re-read.
pub async fn start(path: PathBuf, gateway: Gateway, deps: Deps) -> Result<Running, String> {
    let shared: SharedGateway = Arc::new(ArcSwap::from_pointee(gateway));
    // JWT keys from a `jwks_url` are fetched now, in the background: the
    // gateway serves API-key traffic even while the IdP is down.
    deps.jwks.prefetch();
    let reloader = Reloader::new(path, deps, shared.clone());
    let server = Server::bind(shared.clone()).await?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    let admin = match shared.load().settings.admin_listen {
        Some(listen) => Some(AdminServer::bind(listen, reloader.clone()).await?),
        None => None,
    };
    let admin_addr = admin
        .as_ref()
        .map(|a| a.local_addr())
        .transpose()
        .map_err(|e| e.to_string())?;
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut tasks = vec![tokio::spawn(server.run(until_stopped()))];
    if let Some(admin) = admin {
        tasks.push(tokio::spawn(admin.run(until_stopped())));
    }
    tokio::spawn(watch_config(reloader.clone(), until_stopped()));
    Ok(Running {
        addr,
        admin_addr,
        reloader,
        stop,
        tasks,
    })
}

/// Serves `gateway` until SIGTERM or SIGINT; SIGHUP reloads `path`,
/// SIGUSR1 reopens the access-log file.
pub async fn serve(path: PathBuf, gateway: Gateway, deps: Deps) -> Result<(), String> {
    let running = start(path, gateway, deps).await?;
    let shared = running.reloader.shared().clone();
    tracing::info!(
        addr = %running.addr,
        admin = ?running.admin_addr,
        config = %running.reloader.path().display(),
        "{}",
        shared.load().summary()
    );
    spawn_reload_on_sighup(running.reloader.clone());
    let access_log = running.reloader.deps().access_log.clone();
    crate::access_log::reopen_on_sigusr1(access_log.clone());
    let tracing = running.reloader.deps().tracing.clone();
    shutdown_signal().await;
    running.shutdown().await;
    // The drained requests' spans are exported too (within a bound).
    tracing.shutdown().await;
    // The drained requests' lines are written before the process exits.
    if !access_log.flush(crate::access_log::EXIT_FLUSH) {
        tracing::warn!("the access log could not be written out before exit");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often `reload: watch` looks at the files.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// With `reload: watch`, reloads when the config file, an included file or
/// a TLS file changes (size or modification time). A config that fails is
/// not retried until its files change again.
async fn watch_config(reloader: Arc<Reloader>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut seen = fingerprint(&reloader.shared().load());
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let gateway = reloader.shared().load_full();
        if gateway.loaded.config.reload != ReloadMode::Watch {
            seen = fingerprint(&gateway);
            continue;
        }
        let now = fingerprint(&gateway);
        if now == seen {
            continue;
        }
        tracing::info!("config files changed; reloading");
        let _ = reloader.reload().await;
        // The new config may read other files; a failed one is judged
        // again only once its files change again.
        seen = match reloader.shared().load_full() {
            current if Arc::ptr_eq(&current, &gateway) => now,
            current => fingerprint(&current),
        };
    }
}

/// Size and modification time of every file a gateway was built from.
fn fingerprint(gateway: &Gateway) -> Vec<(PathBuf, Option<(u64, std::time::SystemTime)>)> {
    let tls = gateway
        .settings
        .tls
        .iter()
        .flat_map(|t| [t.cert_file.as_path(), t.key_file.as_path()]);
    gateway
        .loaded
        .files()
        .chain(tls)
        .map(|file| {
            let meta = std::fs::metadata(file)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)));
            (file.to_path_buf(), meta)
        })
        .collect()
}

#[cfg(unix)]
fn spawn_reload_on_sighup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload by signal is off");
            return;
        };
        while hup.recv().await.is_some() {
            let _ = reloader.reload().await;
        }
    });
}

#[cfg(not(unix))]
fn spawn_reload_on_sighup(_: Arc<Reloader>) {}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down: draining in-flight requests");
}

/// A new API key: the secret (shown once), a non-secret id, and the SHA-256
/// the config stores instead of the key.
pub struct NewKey {
    /// The secret key, shown once and never stored.
    pub key: String,
    /// A short non-secret id for the key (`api_keys[].id`).
    pub id: String,
    /// Hex of the key's SHA-256, for `api_keys[].sha256`.
    pub sha256: String,
}

/// A new random key with its id and hash (`tollgate key`); `Err` if the OS gave no randomness.
pub fn new_key() -> Result<NewKey, String> {
    let mut secret = [0u8; 24];
    let mut id = [0u8; 4];
    getrandom::getrandom(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
    getrandom::getrandom(&mut id).map_err(|e| format!("no randomness: {e}"))?;
    let key = format!("tg_{}", hex::encode(secret));
    let sha256 = hex::encode(Sha256::digest(key.as_bytes()));
    Ok(NewKey {
        key,
        id: format!("k_{}", hex::encode(id)),
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_are_random_and_their_hash_matches() {
        let a = new_key().expect("key");
        let b = new_key().expect("key");
        assert_ne!(a.key, b.key);
        assert!(a.key.starts_with("tg_") && a.key.len() == 51);
        assert_eq!(a.sha256, hex::encode(Sha256::digest(a.key.as_bytes())));
        assert!(!a.key.contains(&a.id[2..]));
    }
}

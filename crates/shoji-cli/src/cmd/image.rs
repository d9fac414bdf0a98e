//! `shoji image` commands.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tracing::Instrument;

use shoji_images::{Image, Store};

use super::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build the guest image: a kernel (Shoji's own, built once from Debian's linux-source-6.1
    /// and cached) and an initramfs with shoji-agent as /init
    Build(BuildArgs),
    /// Unpack an OCI image (layout directory or archive) into the image store, each layer
    /// once, without running it
    Load(LoadArgs),
    /// Pull an image from a registry into the image store (the same as `shoji pull`)
    Pull(PullArgs),
    /// List the images in the image store, their layers and sizes
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove an image (or one tag of a pulled one), the layers no other image uses and the
    /// pulled blobs no tag reaches (refused while a running or created container uses them)
    Rm(RmArgs),
    /// Remove what interrupted unpacks and pulls left, layers no image names and pulled blobs
    /// no tag reaches; with --all, first every image no running or created container uses
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// OCI image layout directory, OCI archive or docker-save archive (`PATH:TAG` picks a
    /// tagged entry)
    pub image: PathBuf,
    /// No progress (there is none anyway when standard error is not a terminal)
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// [REGISTRY/]NAME[:TAG|@DIGEST]; a bare NAME is docker.io/library/NAME:latest
    #[arg(value_name = "REF")]
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Trace the pull (overrides enable_tracing in the config)
    #[arg(long)]
    pub trace: bool,
}

/// How `pull`, `run` and `create` reach a registry.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Speak plain HTTP to the registry (registries on localhost, 127.0.0.0/8 and [::1] always
    /// are)
    #[arg(long)]
    pub plain_http: bool,
    /// No progress bars (there are none anyway when standard error is not a terminal)
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl RegistryArgs {
    pub fn options(&self) -> shoji_images::pull::PullOptions {
        shoji_images::pull::PullOptions {
            plain_http: self.plain_http,
            progress: !self.quiet && std::io::stderr().is_terminal(),
            docker_config: None,
        }
    }
}

/// The image a `run` or `create` names: a local layout or archive (`DIR:TAG` included) as it
/// is, anything else a registry reference, pulled into the store at `store` first.
pub async fn resolve_image(
    arg: &Path,
    store: &Path,
    opts: &shoji_images::pull::PullOptions,
) -> anyhow::Result<PathBuf> {
    // A path (absolute, or relative from `.` or `..`) is never a registry reference: a missing
    // one is reported by the run as a missing image, not as a failed pull of a strange name.
    let a_path = arg.is_absolute() || arg.starts_with(".") || arg.starts_with("..");
    if a_path || shoji_images::split_tag(arg).is_some() {
        return Ok(arg.to_path_buf());
    }
    let reference = arg.to_string_lossy();
    let store = Store::open(store)
        .with_context(|| format!("while opening the image store {}", store.display()))?;
    let pulled = shoji_images::pull::pull(&store, &reference, opts)
        .await
        .with_context(|| format!("while pulling {reference}"))?;
    Ok(pulled.image)
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// List the layers (their digests, sizes and whether a running sandbox uses them)
    #[arg(long)]
    pub layers: bool,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The image: a pulled reference (removes that tag only), or its configuration digest
    /// (4 or more of its first hex digits, as `ls` shows them), a pulled manifest digest or
    /// the path it was run from (each removes the image and all its tags)
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Also remove every image (and pulled tag) none of whose layers a running or created
    /// container uses
    #[arg(long)]
    pub all: bool,
}

/// Which kernel the guest image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelArg {
    /// Shoji's kernel: everything built in, no modules (several minutes to build, once per machine)
    Shoji,
    /// Debian's cloud kernel and the modules the agent needs (the fallback)
    Debian,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Output directory (default: $SHOJI_GUEST_DIR, else $XDG_DATA_HOME/shoji/guest, else
    /// ~/.local/share/shoji/guest)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The static agent binary (default: a static shoji-agent next to this shoji executable,
    /// else target/x86_64-unknown-linux-gnu/agent/shoji-agent beside cargo's target/debug)
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// The kernel: Shoji's own (default) or Debian's cloud kernel
    #[arg(long, value_enum, value_name = "KIND")]
    pub kernel: Option<KernelArg>,
    /// Debian kernel package, with --kernel debian (default: what linux-image-cloud-amd64
    /// depends on); implies --kernel debian when --kernel is not given
    #[arg(long, value_name = "NAME")]
    pub kernel_package: Option<String>,
    /// Rebuild the image even if up to date
    #[arg(long)]
    pub force: bool,
    /// Build Shoji's kernel again even if it is cached (in $XDG_CACHE_HOME/shoji/kernel, else
    /// ~/.cache/shoji/kernel)
    #[arg(long)]
    pub rebuild_kernel: bool,
}

impl ImageCommand {
    pub fn run(self, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
        match self {
            ImageCommand::Build(a) => build(a),
            ImageCommand::Load(a) => load(a, global),
            ImageCommand::Pull(a) => pull(a, global),
            ImageCommand::Ls(a) => ls(a, global),
            ImageCommand::Rm(a) => rm(a, global),
            ImageCommand::Prune(a) => prune(a, global),
        }
    }
}

/// A spinner per layer unpacked into the store: `unpacking layer N/TOTAL DIGEST (SIZE)`,
/// cleared once the layer is done.
pub fn unpack_spinner() -> shoji_runtime::sandbox::UnpackProgress {
    let bar = std::sync::Mutex::new(None::<indicatif::ProgressBar>);
    shoji_runtime::sandbox::UnpackProgress(std::sync::Arc::new(move |n, total, layer| {
        // A poisoned lock only loses a spinner.
        let Ok(mut bar) = bar.lock() else { return };
        if let Some(b) = bar.take() {
            b.finish_and_clear();
        }
        if n == 0 {
            return;
        }
        let b = indicatif::ProgressBar::new_spinner();
        b.set_message(format!(
            "unpacking layer {n}/{total} {} ({})",
            short(&layer.diff_id),
            layer
                .size
                .map(shoji_units::fmt_size)
                .unwrap_or_else(|| "size unknown".into())
        ));
        // Drawn now: a layer unpacked before the first tick would show nothing.
        b.tick();
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        *bar = Some(b);
    }))
}

/// `store.prepare(img)` with a spinner per layer unpacked when `progress` (a terminal).
fn prepare_with_progress(
    store: &Store,
    img: &Image,
    progress: bool,
) -> Result<shoji_images::store::Prepared, shoji_images::StoreError> {
    if !progress {
        return store.prepare(img);
    }
    let total = img.layers().len();
    let spinner = unpack_spinner();
    store.prepare_reporting(img, &mut |n, layer| (spinner.0)(n, total, layer))
}

fn open_store(global: &GlobalArgs) -> anyhow::Result<Store> {
    let config = super::load_config(global)?;
    // A killed `shoji run` no longer uses its layers: reclaiming it first lets rm and prune
    // remove them.
    shoji_runtime::reclaim::reclaim_abandoned(&shoji_runtime::sandbox::sandbox_root(&config));
    let root = config.image_store();
    Store::open(&root).with_context(|| format!("while opening the image store {}", root.display()))
}

fn short(d: &shoji_images::Digest) -> &str {
    &d.hex()[..12]
}

fn load(a: LoadArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let start = std::time::Instant::now();
    // A gzip archive is decompressed into an unnamed file there (gone when `img` is dropped).
    let img = Image::open(&a.image, &store.root().join("tmp"))
        .with_context(|| format!("while reading image {}", a.image.display()))?;
    let progress = !a.quiet && std::io::stderr().is_terminal();
    let prepared = prepare_with_progress(&store, &img, progress)
        .with_context(|| format!("while loading image {}", a.image.display()))?;
    println!(
        "{}: {} layers, {} unpacked in {:.2} s",
        short(img.config_digest()),
        prepared.layers.len(),
        prepared.unpacked,
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `shoji pull`: the image's blobs into the store's layout, then (as root, where the store
/// unpacks layers) its layers unpacked, each verified against its `diff_id`.
pub fn pull(a: PullArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(global)?;
    let store = open_store(global)?;
    let runtime_tracing = config
        .tracing
        .runtime_traced(a.trace || config.runtime.enable_tracing);
    let tcfg = super::telemetry::config(&config, global, runtime_tracing, false);
    let mut telemetry = shoji_telemetry::host::init(&tcfg).context("while setting up tracing")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("while starting the async runtime")?;
    let opts = a.registry.options();
    let progress = opts.progress;
    let start = std::time::Instant::now();
    let result = rt.block_on(async {
        let span = super::telemetry::root_span!("pull");
        let r = async {
            let pulled = shoji_images::pull::pull(&store, &a.reference, &opts).await?;
            // Unpacking needs root (overlayfs whiteouts are device nodes); without it, runs
            // unpack the stored blobs themselves.
            let unpacked = if nix::unistd::geteuid().is_root() {
                let (store, image) = (store.clone(), pulled.image.clone());
                let span = tracing::info_span!(
                    "image.unpack",
                    source = "runtime",
                    subsystem = "image",
                    image.layers.unpacked = tracing::field::Empty
                );
                let n = tokio::task::spawn_blocking(move || {
                    span.in_scope(|| -> anyhow::Result<usize> {
                        let img = Image::open(&image, &store.root().join("tmp"))?;
                        let prepared = prepare_with_progress(&store, &img, progress)?;
                        tracing::Span::current().record("image.layers.unpacked", prepared.unpacked);
                        Ok(prepared.unpacked)
                    })
                })
                .await
                .context("the unpacking task failed")?
                .context("while unpacking the pulled layers into the image store")?;
                Some(n)
            } else {
                None
            };
            anyhow::Ok((pulled, unpacked))
        }
        .instrument(span.clone())
        .await;
        if let Err(e) = &r {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_message", format!("{e:#}").as_str());
        }
        span.record("shoji.dropped_spans", telemetry.dropped());
        r
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    telemetry.flush();
    let (pulled, unpacked) = result.with_context(|| format!("while pulling {}", a.reference))?;
    println!(
        "{}: {} ({} blobs downloaded, {}; {} already stored){} in {:.2} s",
        pulled.reference,
        pulled.manifest_digest,
        pulled.blobs_downloaded,
        shoji_units::fmt_size(pulled.bytes_downloaded),
        pulled.blobs_cached,
        unpacked
            .map(|n| format!(", {n} layers unpacked"))
            .unwrap_or_default(),
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn ls(a: LsArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let layers = store.layers()?;
    if a.layers {
        println!(
            "{:<19} {:>10} {:>8}  {:<7} UNPACKED",
            "LAYER", "SIZE", "FILES", "IN USE"
        );
        for l in &layers {
            println!(
                "{:<19} {:>10} {:>8}  {:<7} {}",
                format!(
                    "{}:{}",
                    l.record.diff_id.algorithm_name(),
                    short(&l.record.diff_id)
                ),
                shoji_units::fmt_size(l.record.bytes),
                l.record.entries,
                if l.in_use { "yes" } else { "no" },
                l.record.unpacked
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let images = store.images()?;
    println!(
        "{:<12}  {:>6} {:>10}  {:<7} {:<20} SOURCE",
        "IMAGE", "LAYERS", "SIZE", "IN USE", "LAST USED"
    );
    for img in &images {
        let mine: Vec<_> = layers
            .iter()
            .filter(|l| img.layers.contains(&l.record.diff_id))
            .collect();
        let size: u64 = mine.iter().map(|l| l.record.bytes).sum();
        let missing = img.layers.len() - mine.len();
        println!(
            "{:<12}  {:>6} {:>10}  {:<7} {:<20} {}{}",
            short(&img.config_digest),
            img.layers.len(),
            shoji_units::fmt_size(size),
            if mine.iter().any(|l| l.in_use) {
                "yes"
            } else {
                "no"
            },
            img.last_used,
            img.source.display(),
            if missing > 0 {
                format!(" ({missing} layers not in the store: unpacked again on next use)")
            } else {
                String::new()
            }
        );
    }
    // Pulled tags no record shows (another tag of that image, or pulled without root, when
    // layers are unpacked by the run that uses them).
    let tags = shoji_images::tags::tags(&store)?;
    for t in &tags {
        let shown = images
            .iter()
            .any(|r| r.source.as_os_str() == t.name.as_str());
        let Some(config) = t.configs.first().filter(|_| !shown) else {
            continue;
        };
        let mine: Vec<_> = layers
            .iter()
            .filter(|l| t.diff_ids.contains(&l.record.diff_id))
            .collect();
        println!(
            "{:<12}  {:>6} {:>10}  {:<7} {:<20} {}{}",
            short(config),
            t.diff_ids.len(),
            shoji_units::fmt_size(mine.iter().map(|l| l.record.bytes).sum()),
            if mine.iter().any(|l| l.in_use) {
                "yes"
            } else {
                "no"
            },
            "-",
            t.name,
            if mine.len() < t.diff_ids.len() {
                " (pulled; layers unpacked on first use)"
            } else {
                ""
            }
        );
    }
    let total: u64 = layers.iter().map(|l| l.record.bytes).sum();
    let (blobs, blob_bytes) = shoji_images::tags::blob_usage(&store);
    eprintln!(
        "{} images, {} tags, {} layers, {}; {} pulled blobs, {}; in {}",
        images.len(),
        tags.len(),
        layers.len(),
        shoji_units::fmt_size(total),
        blobs,
        shoji_units::fmt_size(blob_bytes),
        store.root().display()
    );
    Ok(ExitCode::SUCCESS)
}

fn rm(a: RmArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    for id in &a.images {
        let r = store
            .remove_image(id)
            .with_context(|| format!("while removing image {id}"))?;
        println!(
            "removed {id}: {} tags, {} layers ({}), {} pulled blobs ({})",
            r.tags,
            r.layers,
            shoji_units::fmt_size(r.bytes),
            r.blobs,
            shoji_units::fmt_size(r.blob_bytes)
        );
        pull_running_note(&r);
    }
    Ok(ExitCode::SUCCESS)
}

fn pull_running_note(r: &shoji_images::store::Removed) {
    if r.pull_running {
        println!(
            "pulled blobs not collected: a pull, or a rootless run's unpack of a pulled image, \
             is running; `shoji image prune` later does it"
        );
    }
}

fn prune(a: PruneArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(global)?;
    let r = store
        .prune(a.all)
        .context("while pruning the image store")?;
    println!(
        "removed {} images, {} tags, {} layers ({}), {} pulled blobs ({}), {} leftovers of \
         interrupted unpacks",
        r.images,
        r.tags,
        r.layers,
        shoji_units::fmt_size(r.bytes),
        r.blobs,
        shoji_units::fmt_size(r.blob_bytes),
        r.partial
    );
    if r.kept_in_use > 0 {
        println!(
            "kept {} images whose layers running or created containers use",
            r.kept_in_use
        );
    }
    pull_running_note(&r);
    Ok(ExitCode::SUCCESS)
}

fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let agent = match a.agent {
        Some(p) => p,
        None => shoji_image::default_agent(
            &std::env::current_exe().context("while locating the shoji executable")?,
        )
        .context("while looking for the static agent binary")?,
    };
    let kernel = match (a.kernel, &a.kernel_package) {
            (Some(KernelArg::Shoji), Some(p)) => anyhow::bail!(
                "--kernel-package {p} names a Debian kernel package, but --kernel shoji builds Shoji's kernel; use --kernel debian with it"
            ),
            (Some(KernelArg::Shoji), None) | (None, None) => shoji_image::KernelChoice::Shoji,
            (Some(KernelArg::Debian), _) | (None, Some(_)) => shoji_image::KernelChoice::Debian,
        };
    let opts = shoji_image::BuildOptions {
        out: a.out.unwrap_or_else(shoji_image::guest_dir),
        agent,
        kernel,
        kernel_package: a.kernel_package,
        kernel_cache: shoji_image::kbuild::cache_root(),
        force: a.force,
        rebuild_kernel: a.rebuild_kernel,
    };
    let start = std::time::Instant::now();
    let img = shoji_image::build(&opts, &mut |line| eprintln!("  {line}"))
        .context("while building the guest image")?;
    eprintln!(
        "guest image ready in {:.1} s: {} and {}",
        start.elapsed().as_secs_f64(),
        img.kernel.display(),
        img.initrd.display()
    );
    Ok(ExitCode::SUCCESS)
}

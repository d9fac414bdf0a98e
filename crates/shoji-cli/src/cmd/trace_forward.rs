//! `shoji trace forward`: the standalone forwarder, the Kata way. The runtime runs the same
//! forwarder built in; this is for VMs started by something else.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::GlobalArgs;

/// Receive agent span frames on a hybrid-vsock socket and pass them on
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// The hybrid-vsock Unix socket of the VM (vhost-device-vsock's --uds-path); the forwarder
    /// listens on PATH_<vsock-port>
    #[arg(long, value_name = "PATH")]
    pub socket_path: PathBuf,
    /// The host vsock port the agent sends frames to
    #[arg(long, default_value_t = shoji_protocols::TRACE_VSOCK_PORT)]
    pub vsock_port: u32,
    /// The sandbox id stamped on every span (default: the socket's directory name)
    #[arg(long)]
    pub sandbox_id: Option<String>,
    /// Send spans to this OTLP endpoint (with --otlp-protocol grpc|http/protobuf|http/json)
    #[arg(long, value_name = "URL", conflicts_with = "dump_only")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol for --otlp-endpoint
    #[arg(long, default_value = "http/protobuf")]
    pub otlp_protocol: String,
    /// Print each received span's name and attributes instead of storing it
    #[arg(long)]
    pub dump_only: bool,
}

impl ForwardArgs {
    pub fn run(self, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
        let path = PathBuf::from(format!(
            "{}_{}",
            self.socket_path.display(),
            self.vsock_port
        ));
        let sandbox_id = self.sandbox_id.clone().unwrap_or_else(|| {
            self.socket_path
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "unknown".into())
        });
        let mut pipeline = None;
        let deliver = if self.dump_only {
            shoji_forwarder::at_once(dump)
        } else {
            let cfg = shoji_telemetry::host::TelemetryConfig {
                tracing: true,
                runtime_spans: false,
                data_dir: shoji_trace::data_dir::resolve(global.data_dir.as_deref()),
                otlp_endpoint: self.otlp_endpoint.clone(),
                otlp_protocol: Some(self.otlp_protocol.clone()),
                ..Default::default()
            };
            let sink =
                shoji_telemetry::host::select_sink(&cfg).context("while opening the span sink")?;
            eprintln!("forwarding to {}", sink.describe());
            let p = shoji_telemetry::pipeline::Pipeline::start(sink);
            pipeline = Some(p.clone());
            shoji_forwarder::to_pipeline(p)
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("while starting the async runtime")?;
        rt.block_on(async {
            let identity = shoji_forwarder::Identity {
                sandbox_id,
                service_name: "shoji-agent".into(),
            };
            let f = shoji_forwarder::Forwarder::start(&path, identity, deliver)
                .with_context(|| format!("while listening on {}", path.display()))?;
            // A standalone forwarder has no clock measurement: times pass through unchanged.
            f.set_clock_offset(0);
            eprintln!("listening on {}", path.display());
            let _ = tokio::signal::ctrl_c().await;
            let stats = f.stats.clone();
            f.shutdown(std::time::Duration::from_secs(2)).await;
            // What is still queued reaches the sink before the process exits.
            let dropped = pipeline.as_ref().map_or(0, |p| {
                p.flush(std::time::Duration::from_secs(10));
                p.dropped()
            });
            eprintln!(
                "forwarded {} spans in {} frames, rejected {} frames, {dropped} spans dropped",
                stats
                    .spans_forwarded
                    .load(std::sync::atomic::Ordering::Relaxed),
                stats.frames_ok.load(std::sync::atomic::Ordering::Relaxed),
                stats.rejected()
            );
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `--dump-only`: one line per span, its name and attributes.
fn dump(req: shoji_telemetry::ExportTraceServiceRequest) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    for rs in &req.resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let attrs: Vec<String> = span
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(Value::StringValue(s)) => s.clone(),
                            Some(Value::IntValue(i)) => i.to_string(),
                            Some(Value::BoolValue(b)) => b.to_string(),
                            Some(Value::DoubleValue(d)) => d.to_string(),
                            _ => String::new(),
                        };
                        format!("{}={v}", kv.key)
                    })
                    .collect();
                println!("{} {}", span.name, attrs.join(" "));
            }
        }
    }
}

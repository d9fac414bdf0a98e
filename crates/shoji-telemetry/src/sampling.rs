//! Head sampling: whether a trace is exported at all, decided once where it starts.
//!
//! The runtime's root span (`run`, `sandbox`, the shim's server span) is the only span that
//! decides; everything under it follows its parent's sampled flag, in this process (the SDK's
//! parent-based sampler) and beyond it: the flag rides the W3C `traceparent` on the kernel
//! command line and in every ttRPC request, and the agent samples on its parent too. A root
//! with an incoming parent (containerd's `traceparent` to the shim) follows that parent's flag.

use opentelemetry_sdk::trace::Sampler;

#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error(
        "unknown sampler {name:?} (from {origin}): use always_on, always_off, traceidratio, \
         parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )]
    Unknown { name: String, origin: &'static str },
    #[error("sampler argument {value:?} (from {origin}) is not a ratio between 0 and 1")]
    Ratio { value: String, origin: &'static str },
}

/// The sampler for the configuration's `sample_ratio`, else its `sampler` name, else
/// `OTEL_TRACES_SAMPLER` (both with `OTEL_TRACES_SAMPLER_ARG` as the ratio, default 1), else
/// parent-based always-on (every trace).
pub fn resolve(
    sample_ratio: Option<f64>,
    sampler: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Sampler, SamplingError> {
    if let Some(r) = sample_ratio {
        if !(0.0..=1.0).contains(&r) {
            return Err(SamplingError::Ratio {
                value: r.to_string(),
                origin: "[tracing] sample_ratio",
            });
        }
        return Ok(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            r,
        ))));
    }
    let (name, origin) = match sampler {
        Some(s) => (s.to_string(), "[runtime] sampler"),
        None => match env("OTEL_TRACES_SAMPLER").filter(|v| !v.trim().is_empty()) {
            Some(s) => (s, "OTEL_TRACES_SAMPLER"),
            None => return Ok(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))),
        },
    };
    let ratio = || -> Result<f64, SamplingError> {
        let Some(arg) = env("OTEL_TRACES_SAMPLER_ARG").filter(|v| !v.trim().is_empty()) else {
            return Ok(1.0);
        };
        arg.trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or(SamplingError::Ratio {
                value: arg,
                origin: "OTEL_TRACES_SAMPLER_ARG",
            })
    };
    let parent_based = |s: Sampler| Sampler::ParentBased(Box::new(s));
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => parent_based(Sampler::AlwaysOn),
        "parentbased_always_off" => parent_based(Sampler::AlwaysOff),
        "parentbased_traceidratio" => parent_based(Sampler::TraceIdRatioBased(ratio()?)),
        _ => return Err(SamplingError::Unknown { name, origin }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    /// How many of 1,000 roots `s` samples, and whether it follows an unsampled and a sampled
    /// parent.
    fn behaviour(s: &Sampler) -> (usize, bool, bool) {
        let decide = |parent: Option<&opentelemetry::Context>, id: u128| {
            s.should_sample(
                parent,
                TraceId::from(id),
                "run",
                &SpanKind::Internal,
                &[],
                &[],
            )
            .decision
                == SamplingDecision::RecordAndSample
        };
        let roots = (1..=1000u128)
            .filter(|i| {
                decide(
                    None,
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                )
            })
            .count();
        let parent = |flags| {
            opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(7u128),
                SpanId::from(9u64),
                flags,
                true,
                TraceState::default(),
            ))
        };
        (
            roots,
            !decide(Some(&parent(TraceFlags::default())), 7),
            decide(Some(&parent(TraceFlags::SAMPLED)), 7),
        )
    }

    #[test]
    fn the_ratio_key_wins_and_is_parent_based() {
        let e = [("OTEL_TRACES_SAMPLER", "always_on")];
        let s = resolve(Some(0.0), Some("always_on"), env(&e)).unwrap();
        assert_eq!(
            behaviour(&s),
            (0, true, true),
            "ratio 0: no root, parents followed"
        );
        let s = resolve(Some(1.0), None, env(&[])).unwrap();
        assert_eq!(behaviour(&s), (1000, true, true));
        let (n, ..) = behaviour(&resolve(Some(0.5), None, env(&[])).unwrap());
        assert!((400..600).contains(&n), "{n} of 1000 at 0.5");
        assert!(resolve(Some(2.0), None, env(&[])).is_err());
    }

    #[test]
    fn the_standard_variables_are_read_below_the_keys() {
        let none = resolve(None, None, env(&[])).unwrap();
        assert_eq!(
            behaviour(&none),
            (1000, true, true),
            "default: every root, parent-based"
        );
        let e = [
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ];
        assert_eq!(
            behaviour(&resolve(None, None, env(&e)).unwrap()),
            (0, true, true)
        );
        let e = [("OTEL_TRACES_SAMPLER", "always_off")];
        assert_eq!(behaviour(&resolve(None, None, env(&e)).unwrap()).0, 0);
        // The key names the sampler; the argument still comes from the environment.
        let e = [("OTEL_TRACES_SAMPLER_ARG", "0")];
        let s = resolve(None, Some("traceidratio"), env(&e)).unwrap();
        assert_eq!(behaviour(&s).0, 0);
        let bad = [("OTEL_TRACES_SAMPLER", "sometimes")];
        let msg = resolve(None, None, env(&bad)).unwrap_err().to_string();
        assert!(
            msg.contains("\"sometimes\" (from OTEL_TRACES_SAMPLER)"),
            "{msg}"
        );
        let bad = [
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "half"),
        ];
        let msg = resolve(None, None, env(&bad)).unwrap_err().to_string();
        assert!(msg.contains("\"half\""), "{msg}");
    }
}

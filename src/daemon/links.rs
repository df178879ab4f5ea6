//! Link impairments on a port (`Request::SetImpairment`): the delay, jitter and loss a
//! test rig asks for, applied in the switch because rig hosts may lack `sch_netem`.

use std::time::Duration;

use vswitch::impair::ImpairConfig;

use super::bridges::dp_error;
use super::Daemon;
use crate::control::{ErrorKind, Response};

impl Daemon {
    /// Sets (or, with all zeros, lifts) the impairment of `port`.
    pub async fn set_impairment(
        &self,
        port: &str,
        delay_us: u64,
        jitter_us: u64,
        loss_ppm: u32,
    ) -> Response {
        if loss_ppm > 1_000_000 {
            return Response::err(
                ErrorKind::BadInput,
                format!("loss {loss_ppm} ppm is over 100 %"),
            );
        }
        if jitter_us > delay_us {
            return Response::err(
                ErrorKind::BadInput,
                format!("jitter {jitter_us} µs is larger than the delay {delay_us} µs"),
            );
        }
        let config = ImpairConfig {
            delay: Duration::from_micros(delay_us),
            jitter: Duration::from_micros(jitter_us),
            loss_ppm,
            limit: 0,
        };
        match self.dp.set_impairment(port, config).await {
            Ok(()) => Response::ok(serde_json::json!({
                "port": port,
                "delay_us": delay_us,
                "jitter_us": jitter_us,
                "loss_ppm": loss_ppm,
            })),
            Err(e) => dp_error(e),
        }
    }
}

//! The drill scenario parser (`drill::load`) and what a sim drill makes of a scenario before it
//! runs anything: its faults and endpoints merged into the default fleet, and that fleet parsed
//! by the simulator (`SimCloud::from_toml`).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use runbook::front::drill;
use runbook::runbook::catalog::Target;
use runbook::services::cloud::sim::{DEFAULT_FLEET, SimCloud};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(scenario) = drill::parse(text, Path::new("drills/fuzz.toml")) else {
        return;
    };
    let _ = Target::parse(&scenario.runbook);
    if scenario.emulator.is_none()
        && let Ok(fleet) = drill::fleet_with_faults(DEFAULT_FLEET, &scenario)
        && let Ok(sim) = SimCloud::from_toml(&fleet)
    {
        let _ = sim.state_json();
    }
});

//! Real runc containers on bfcfs bundles: the config's command set, `runc run -d`, and a guard
//! that kills and deletes the container however the test ends.
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// A runc container id; dropping it kills and deletes the container.
pub struct Runc(pub String);

impl Drop for Runc {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["kill", &self.0, "KILL"])
            .output();
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.0])
            .output();
    }
}

/// Sets the bundle's process arguments (no terminal), starts it detached as `id` and returns
/// its guard; runc's stderr goes to `log`, quoted if the start fails.
pub fn run_detached(bundle: &Path, id: &str, args: serde_json::Value, log: &Path) -> Runc {
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["args"] = args;
    cfg["process"]["terminal"] = serde_json::json!(false);
    fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let guard = Runc(id.to_string());
    let st = Command::new("runc")
        .args(["run", "-d", "-b", bundle.to_str().unwrap(), id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "runc run -d: {}",
        fs::read_to_string(log).unwrap_or_default()
    );
    guard
}
